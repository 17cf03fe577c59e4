"""tfos under Spark Connect: no SparkContext on the client, and executors that may not reach the client.

Layout, mirroring the runtime:

- ``session``: recognising a Connect session, reading its settings, running (and interrupting) its jobs.
- ``control``: the control server that node 0 hosts (the same :class:`Reservation` state machine and the same
  gRPC service the driver serves in classic mode, plus a small service to read the final state), in the node
  task (InputMode.TENSORFLOW) or in a detached process (InputMode.SPARK).
- ``stage``: what the Spark tasks run: the barrier node stage (``mapInArrow(..., barrier=True)``), and the
  small jobs that end the feed and read node 0's state.
- ``cluster``: the client API, :class:`ConnectCluster`, returned by ``TFCluster.run`` for a Connect session.
"""
