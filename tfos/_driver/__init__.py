"""The driver side of a TF cluster: the launch pipeline shared by every kind of Spark session (``launch``)."""
