"""File systems behind the paths tfos reads and writes: local disk, ``s3://``, ``hdfs://`` and any fsspec scheme.

TensorFlow 2.21 itself reads only local paths (and ``gs://``); tfos reaches the rest through fsspec:

==================  ==========================================  =====================================================
scheme              implementation                              settings (read from the environment)
==================  ==========================================  =====================================================
(none), file://     local disk                                  -
s3://, s3a://,      s3fs (``pip install tfos[s3]``)             ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
s3n://                                                          ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` (or
                                                                ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION``,
                                                                ``TFOS_S3_ADDRESSING_STYLE`` (path|virtual|auto;
                                                                default path when an endpoint is set), and the
                                                                rest of botocore's usual chain (profiles, roles)
hdfs://, viewfs://  hdfs-native (``pip install tfos[hdfs]``),   ``HADOOP_CONF_DIR`` (``core-site.xml``,
                    or pyarrow's libhdfs client with            ``hdfs-site.xml``), Kerberos ticket cache
                    ``TFOS_HDFS_CLIENT=pyarrow``                (``KRB5CCNAME``)
anything else       the fsspec implementation of that scheme    its own
==================  ==========================================  =====================================================

``hdfs://namenode:8020/path`` names a namenode, ``hdfs://nameservice/path`` an HA name service of the Hadoop
configuration and ``hdfs:///path`` its ``fs.defaultFS``. hdfs-native connects on the first request; an unreachable
namenode fails after its failover retries (about 3 minutes by default, as Hadoop's own client;
``dfs.client.failover.max.attempts`` and ``dfs.client.failover.sleep.max.millis`` in ``hdfs-site.xml`` shorten it).

On the driver, :func:`tfos.cluster.run` turns Spark's ``spark.hadoop.fs.s3a.*`` settings into these variables for
the TF processes (:func:`s3a_env`), so a job configured for Spark's S3A reads the same buckets from TF. Secrets
travel only in process environments and are never logged.

Errors from the storage clients are translated here, in one place, into :class:`StorageError` with the path,
the likely cause and the setting to check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from typing import Iterator, Mapping, Sequence

from .config import FsSettings
from .errors import StorageError

logger = logging.getLogger(__name__)

__all__ = ["StorageError", "download", "download_tree", "expand", "filesystem", "is_local", "normalize", "s3a_env",
           "spark_env", "upload", "uploaded_dir", "writable_by_tensorflow"]

_S3_ALIASES = {"s3a": "s3", "s3n": "s3"}
# Seconds to connect to an S3 endpoint, and attempts in all: an unreachable endpoint fails in seconds, not minutes.
_S3_CONNECT_TIMEOUT = 5
_S3_MAX_ATTEMPTS = 3
_TMP_MARK = "._tfos-tmp-"
# Schemes without a directory rename: a tree is moved object by object (copy, then delete).
_OBJECT_STORES = frozenset({"s3", "gs", "gcs", "az", "abfs", "abfss", "oss"})

# Hadoop S3A settings (keys of the Hadoop configuration, i.e. Spark's spark.hadoop.* without that prefix) and the
# environment variables that carry them to botocore/s3fs.
_S3A_TO_ENV = {
    "fs.s3a.access.key": "AWS_ACCESS_KEY_ID",
    "fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY",
    "fs.s3a.session.token": "AWS_SESSION_TOKEN",
    "fs.s3a.endpoint": "AWS_ENDPOINT_URL",
    "fs.s3a.endpoint.region": "AWS_REGION",
}
_S3A_SSL = "fs.s3a.connection.ssl.enabled"
_S3A_PATH_STYLE = "fs.s3a.path.style.access"
# The Hadoop keys s3a_env reads: fetching only these from the JVM keeps TFCluster.run's start short.
S3A_SETTINGS = r"^(" + "|".join(re.escape(k) for k in (*_S3A_TO_ENV, _S3A_SSL, _S3A_PATH_STYLE)) + r")$"


def scheme(url: str) -> str:
    """The URL's scheme after aliasing (``s3a`` -> ``s3``); ``"file"`` for plain paths."""
    head, sep, _ = url.partition("://")
    if not sep or not head or "/" in head:
        return "file"
    head = head.lower()
    return _S3_ALIASES.get(head, head)


def normalize(url: str) -> str:
    """Spells ``url`` the way fsspec does: ``s3a://b/k`` -> ``s3://b/k``; ``file:///x`` -> ``/x``; else unchanged."""
    kind = scheme(url)
    if kind == "file":
        return url[len("file://"):] if url.startswith("file://") else url
    return kind + "://" + url.partition("://")[2]


def is_local(url: str) -> bool:
    """Whether ``url`` is a local path (no scheme, or ``file://``)."""
    return scheme(url) == "file"


def s3a_env(hadoop_conf: Mapping[str, str]) -> dict[str, str]:
    """Environment variables for botocore/s3fs from Hadoop S3A settings (``fs.s3a.*``).

    Args:
        hadoop_conf: Hadoop configuration entries (``spark.hadoop.`` prefixes may be left on).

    Returns:
        ``AWS_*`` variables (and ``TFOS_S3_ADDRESSING_STYLE``) for the settings present; empty if none are.
    """
    conf = {key.removeprefix("spark.hadoop."): value for key, value in hadoop_conf.items()}
    env = {var: conf[key] for key, var in _S3A_TO_ENV.items() if conf.get(key)}
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint and "://" not in endpoint:  # S3A takes a bare host; its default scheme follows ssl.enabled.
        ssl = conf.get(_S3A_SSL, "true").strip().lower() != "false"
        env["AWS_ENDPOINT_URL"] = ("https://" if ssl else "http://") + endpoint
    style = conf.get(_S3A_PATH_STYLE, "").strip().lower()
    if style in ("true", "false"):
        env["TFOS_S3_ADDRESSING_STYLE"] = "path" if style == "true" else "auto"
    return env


def _s3_options(env: Mapping[str, str]) -> dict:
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    style = FsSettings.from_env(env).s3_addressing_style or ("path" if endpoint else "auto")
    options: dict = {
        "config_kwargs": {
            "connect_timeout": _S3_CONNECT_TIMEOUT,
            "retries": {"max_attempts": _S3_MAX_ATTEMPTS, "mode": "standard"},
            "s3": {"addressing_style": style},
        },
    }
    if endpoint:
        options["endpoint_url"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    # Passed explicitly (rather than left to botocore's chain) so that fsspec's instance cache, keyed on these
    # options, never hands out a file system holding other credentials.
    for option, var in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                        ("token", "AWS_SESSION_TOKEN")):
        if env.get(var):
            options[option] = env[var]
    return options


def _hdfs_authority(url: str) -> tuple[str | None, int | None]:
    """``hdfs://nn:8020/x`` -> ``("nn", 8020)``; ``hdfs://ns1/x`` -> ``("ns1", None)``; ``hdfs:///x`` -> ``(None, None)``.

    The host keeps its case (an HA name service ID is matched against the Hadoop configuration as written).
    """
    netloc = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if not netloc:
        return None, None
    if netloc.endswith("]") or ":" not in netloc:  # no port (or a bare [IPv6] address)
        return netloc, None
    host, _, port = netloc.rpartition(":")
    if not port.isdigit():
        raise StorageError(f"{url}: the namenode port {port!r} is not a number (expected hdfs://host:port/path)")
    return host or None, int(port)


def _hdfs_client(url: str, env: Mapping[str, str]) -> tuple[str, dict]:
    """Which HDFS client serves ``url`` and the arguments it is built with; connects to nothing.

    Returns:
        ``("native", {"protocol", "host", "port"})`` for hdfs-native (the default), or ``("pyarrow", {"host",
        "port"})`` for pyarrow's libhdfs client when ``TFOS_HDFS_CLIENT=pyarrow``. A missing host means the
        Hadoop configuration's ``fs.defaultFS`` (``"default"`` for pyarrow).

    Raises:
        ConfigError: ``TFOS_HDFS_CLIENT`` names no known client (see :class:`tfos.config.FsSettings`).
        StorageError: the URL's port is not a number.
    """
    client = FsSettings.from_env(env).hdfs_client
    kind = scheme(url)
    host, port = _hdfs_authority(url)
    if client == "native":
        return "native", {"protocol": kind, "host": host, "port": port}
    if kind == "viewfs":  # libhdfs takes a full URI as the namenode and resolves the mount table itself
        return "pyarrow", {"host": f"viewfs://{host or ''}", "port": 0}
    return "pyarrow", {"host": host or "default", "port": port or 0}


# hdfs-native file systems, one per client settings, for the life of the process. Not in fsspec's instance
# cache: fsspec empties that in a forked child (os.register_at_fork), and an hdfs-native client finalized in a
# forked child hangs there forever (its Rust runtime waits for threads that stayed in the parent). A fork that
# runs those hooks is common: subprocess.Popen with a preexec_fn (pyspark starts its JVM so), multiprocessing.
_HDFS_CLIENTS: dict = {}
_INHERITED: list = []  # in a forked child, the parent's clients: kept, never finalized


def _forget_clients_in_child() -> None:
    global _HDFS_CLIENTS
    _INHERITED.append(_HDFS_CLIENTS)
    _HDFS_CLIENTS = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_clients_in_child)


def _hdfs_filesystem(url: str, env: Mapping[str, str]):
    client, options = _hdfs_client(url, env)
    if client == "pyarrow":
        return _pyarrow_hdfs(url, **options)
    try:
        from hdfs_native.fsspec import HdfsFileSystem, ViewfsFileSystem
    except ImportError as exc:
        raise StorageError(
            f"Reading {url} needs an HDFS client: pip install 'tfos[hdfs]' (hdfs-native), or set "
            "TFOS_HDFS_CLIENT=pyarrow where the cluster provides libhdfs"
        ) from exc
    factory = ViewfsFileSystem if options.pop("protocol") == "viewfs" else HdfsFileSystem
    key = (factory, tuple(sorted(options.items())))
    if key in _HDFS_CLIENTS:
        return _HDFS_CLIENTS[key]
    try:
        # Reads the Hadoop configuration; connects on the first request, not here. Not in fsspec's instance
        # cache: see _HDFS_CLIENTS.
        client = _HDFS_CLIENTS[key] = factory(**options, skip_instance_cache=True)
        return client
    except (RuntimeError, ValueError) as exc:
        raise StorageError(
            f"hdfs-native could not set up a client for {url} ({_short(exc)}). A namenode without a port must be "
            "a name service (or viewfs mount table) defined in the Hadoop configuration: set HADOOP_CONF_DIR to "
            "the directory of core-site.xml and hdfs-site.xml, or give the port (hdfs://namenode:8020/path)"
        ) from exc


def _pyarrow_hdfs(url: str, host: str, port: int):
    try:
        from fsspec.implementations.arrow import HadoopFileSystem
    except ImportError as exc:
        raise StorageError(f"TFOS_HDFS_CLIENT=pyarrow needs pyarrow (pip install pyarrow) to read {url}") from exc
    try:
        return HadoopFileSystem(host=host, port=port)  # loads libhdfs and the JVM, and connects
    except OSError as exc:
        raise StorageError(
            f"TFOS_HDFS_CLIENT=pyarrow: pyarrow's libhdfs client could not load or connect for {url} "
            f"({_short(exc)}). It needs JAVA_HOME, HADOOP_HOME (or ARROW_LIBHDFS_DIR) and CLASSPATH set to "
            "`hadoop classpath --glob`; or unset TFOS_HDFS_CLIENT to use hdfs-native (pip install 'tfos[hdfs]')"
        ) from exc


def filesystem(url: str, env: Mapping[str, str] | None = None):
    """The fsspec file system for ``url`` and the path within it.

    Args:
        url: a path or URL (see the module docstring for the schemes).
        env: where settings come from; defaults to ``os.environ``.

    Returns:
        ``(fs, path)``: an ``fsspec.AbstractFileSystem`` and ``url``'s path as that file system spells it.

    Raises:
        StorageError: the scheme's client is not installed (or, for pyarrow's HDFS client, cannot load).
        ConfigError: ``TFOS_HDFS_CLIENT`` names no known HDFS client, or ``TFOS_S3_ADDRESSING_STYLE`` no known
            style (see :class:`tfos.config.FsSettings`).
    """
    import fsspec

    env = os.environ if env is None else env
    kind, url = scheme(url), normalize(url)
    if kind in ("hdfs", "viewfs"):
        fs = _hdfs_filesystem(url, env)
        return fs, url
    options = _s3_options(env) if kind == "s3" else {}  # outside the try: a bad setting is a ConfigError
    try:
        fs = fsspec.filesystem(kind, **options)
    except ImportError as exc:
        extra = {"s3": " (pip install 'tfos[s3]')"}.get(kind, "")
        raise StorageError(f"No file system client for {kind}:// paths is installed{extra}: {exc}") from exc
    except ValueError as exc:
        raise StorageError(f"{kind}:// is not a file system scheme fsspec knows ({url}): {exc}") from exc
    return fs, fs._strip_protocol(url)


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Turns a storage client's error about ``url`` into a :class:`StorageError` saying what to check."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError(f"{url} does not exist{_missing_hint(url, exc)}") from exc
    except PermissionError as exc:
        raise StorageError(
            f"Access to {url} was denied ({_short(exc)}). Check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or spark.hadoop.fs.s3a.access.key / secret.key) and the bucket's policy"
        ) from exc
    except OSError as exc:
        raise StorageError(f"Could not reach {url}: {_short(exc)}{_endpoint_hint(url)}") from exc
    except Exception as exc:  # botocore / aiohttp / hdfs-native errors have no common base
        name = type(exc).__name__
        if "Credential" in name or "Signature" in _short(exc) or "AccessDenied" in _short(exc):
            raise StorageError(
                f"{url}: the S3 server refused the credentials ({name}: {_short(exc)}). Check AWS_ACCESS_KEY_ID "
                "/ AWS_SECRET_ACCESS_KEY (or spark.hadoop.fs.s3a.access.key / secret.key)"
            ) from exc
        if "Connect" in name or "Endpoint" in name or "Timeout" in name:
            raise StorageError(f"Could not reach {url}: {name}: {_short(exc)}{_endpoint_hint(url)}") from exc
        raise


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _missing_hint(url: str, exc: BaseException) -> str:
    if scheme(url) == "s3" and "bucket" in str(exc).lower():
        bucket = normalize(url)[len("s3://"):].partition("/")[0]
        return f": bucket {bucket!r} does not exist at this endpoint{_endpoint_hint(url)}"
    return ""


def _missing_bucket(filesystem, url: str) -> str:
    if scheme(url) != "s3":
        return ""
    bucket = normalize(url)[len("s3://"):].partition("/")[0]
    return "" if filesystem.exists(bucket) else f": there is no bucket {bucket!r}"


def _endpoint_hint(url: str) -> str:
    if scheme(url) != "s3":
        return ""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS's default"
    return f" (S3 endpoint: {endpoint}; set AWS_ENDPOINT_URL or spark.hadoop.fs.s3a.endpoint)"


def expand(patterns: str | Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Expands paths, directories and globs into a sorted list of file URLs.

    A directory stands for the files in it (not recursively), skipping names that start with ``_`` or ``.``
    (``_SUCCESS``, ``.crc`` files), as Spark and Hadoop do.

    Args:
        patterns: one or more paths, directories or globs (``*``, ``?``, ``[..]``), in any supported scheme.
        env: where settings come from; defaults to ``os.environ``.

    Returns:
        The files' URLs in the scheme they were given in (``s3a://`` stays ``s3a://``), sorted, without duplicates.

    Raises:
        StorageError: a pattern matched nothing, a path is missing, or the storage cannot be reached.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found: dict[str, None] = {}
    for pattern in patterns:
        for url in _expand_one(pattern, env):
            found.setdefault(url, None)
    return list(found)


def _expand_one(pattern: str, env) -> list[str]:
    fs, path = filesystem(pattern, env)
    with translated(pattern):
        # fsspec shares one file system object per process, and Spark reuses its Python workers: a listing
        # cached by an earlier job would be stale.
        fs.invalidate_cache()
        if any(ch in path for ch in "*?["):
            paths = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            paths = [p for p in fs.ls(path, detail=False) if fs.isfile(p)
                     and not posixpath.basename(p.rstrip("/")).startswith(("_", "."))]
        elif fs.exists(path):
            paths = [path]
        else:
            raise StorageError(f"{pattern} does not exist{_missing_bucket(fs, pattern)}{_endpoint_hint(pattern)}")
    if not paths:
        with translated(pattern):
            raise StorageError(f"No files match {pattern}{_missing_bucket(fs, pattern)}")
    return sorted(_with_scheme(pattern, fs, p) for p in paths)


def _with_scheme(pattern: str, filesystem, path: str) -> str:
    """``path`` (as ``filesystem`` lists it) as a URL in ``pattern``'s spelling of the scheme and authority."""
    if is_local(pattern):
        return path
    given, _, rest = pattern.partition("://")
    if scheme(pattern) in ("hdfs", "viewfs"):
        # Some HDFS clients (pyarrow's) list bare paths and drop the namenode when adding the scheme back.
        return f"{given}://{rest.partition('/')[0]}/{filesystem._strip_protocol(path).lstrip('/')}"
    return given + "://" + filesystem.unstrip_protocol(path).partition("://")[2]


def download(url: str, local_path: str) -> str:
    """Copies one remote file to ``local_path`` (written under a temporary name, then renamed).

    Returns:
        ``local_path``.

    Raises:
        StorageError: the file is missing or the storage cannot be reached.
    """
    fs, path = filesystem(url)
    partial = local_path + _TMP_MARK + uuid.uuid4().hex[:8]
    try:
        with translated(url):
            fs.get_file(path, partial)
        os.replace(partial, local_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    return local_path


def download_tree(url: str, local_dir: str) -> bool:
    """Copies the files under ``url`` (recursively) into ``local_dir``.

    Returns:
        False if ``url`` does not exist (nothing copied), else True.

    Raises:
        StorageError: the storage cannot be reached or refused the request.
    """
    store, path = filesystem(url)
    with translated(url):
        if not store.exists(path):
            return False
        if store.isfile(path):
            store.get_file(path, os.path.join(local_dir, posixpath.basename(path)))
        else:
            store.get(path.rstrip("/") + "/", local_dir.rstrip("/") + "/", recursive=True)
    return True


def writable_by_tensorflow(url: str) -> bool:
    """Whether TensorFlow itself can write ``url``: local paths, and schemes TensorFlow registers (``gs://``)."""
    if is_local(url):
        return True
    try:
        import tensorflow as tf

        return scheme(url) in set(tf.io.gfile.get_registered_schemes())
    except (ImportError, AttributeError):
        return False


def spark_env(spark) -> dict[str, str]:
    """The ``AWS_*`` variables (:func:`s3a_env`) for Spark's Hadoop S3A settings, read from a SparkContext/Session.

    From a Spark Connect session only the ``spark.hadoop.fs.s3a.*`` Spark settings are seen (no core-site.xml).

    For driver-side code that reads what the TF nodes wrote, e.g. ``os.environ.update(tfos.fs.spark_env(sc))``.
    """
    from ._driver import spark as _spark
    from ._connect import session as connect

    if connect.is_connect(spark):  # no JVM on a Connect client: the server's spark.hadoop.fs.s3a.* settings
        return s3a_env(connect.hadoop_settings(spark, "fs.s3a."))
    return s3a_env(_spark.hadoop_conf(_spark.spark_context(spark), S3A_SETTINGS))


def upload(local_path: str, url: str, overwrite: bool = True) -> str:
    """Copies a local file or directory tree to ``url`` so that readers never see a partial result.

    Everything is first written beside the target under a temporary name, then moved into place: a rename on
    HDFS and local disk (atomic); on S3, which has no rename, a server-side copy per object made after every upload
    succeeded. An existing target is replaced when ``overwrite`` is true.

    Args:
        local_path: a local file or directory.
        url: where it goes (any supported scheme, including a local path).
        overwrite: replace an existing ``url``; if false and ``url`` exists, raise.

    Returns:
        ``url``.

    Raises:
        StorageError: ``url`` exists and ``overwrite`` is false, or the storage failed.
    """
    if not os.path.exists(local_path):
        raise StorageError(f"Nothing to upload: {local_path} does not exist")
    fs, path = filesystem(url)
    staging = path.rstrip("/") + _TMP_MARK + uuid.uuid4().hex[:8]
    with translated(url):
        if fs.exists(path):
            if not overwrite:
                raise StorageError(f"{url} already exists (overwrite=False)")
        recursive = os.path.isdir(local_path)
        parent = path.rstrip("/").rpartition("/")[0]
        if parent and scheme(url) not in _OBJECT_STORES:
            fs.makedirs(parent, exist_ok=True)
        try:
            fs.put(local_path.rstrip("/") + ("/" if recursive else ""), staging, recursive=recursive)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            _move(fs, staging, path, recursive and scheme(url) in _OBJECT_STORES)
        finally:
            # Unconditionally: an S3 server may keep emptied "directories" that exists() does not see.
            fs.invalidate_cache()
            with contextlib.suppress(FileNotFoundError):
                fs.rm(staging, recursive=True)
            fs.invalidate_cache()
    logger.info("uploaded %s to %s", local_path, url)
    return url


def _move(filesystem, src: str, dst: str, per_object: bool) -> None:
    if not per_object:
        filesystem.mv(src, dst, recursive=True)  # a rename: atomic on local disk and HDFS
        return
    moved = filesystem.find(src)
    for path in moved:
        filesystem.mv(path, dst + path[len(src):])
    # Some S3 servers (SeaweedFS) keep the emptied "directories" as entries; delete them too, deepest first.
    folders = {src}
    for path in moved:
        folder = posixpath.dirname(path)
        while len(folder) > len(src) and folder not in folders:
            folders.add(folder)
            folder = posixpath.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):
        with contextlib.suppress(Exception):
            filesystem.rm_file(folder.rstrip("/") + "/")


@contextlib.contextmanager
def uploaded_dir(url: str, overwrite: bool = True) -> Iterator[str]:
    """A local directory that is uploaded to ``url`` (see :func:`upload`) when the block ends without error.

    For outputs that TensorFlow can only write locally (SavedModels, final checkpoints) when ``url`` is on S3 or
    HDFS. For a local ``url`` the block writes to a sibling temporary directory that is renamed into place.

    Example::

        with tfos.fs.uploaded_dir("s3://bucket/models/mnist") as local:
            model.save(local)

    Yields:
        The local directory to write into.
    """
    parent = os.path.dirname(normalize(url).rstrip("/")) if is_local(url) else None
    if parent:
        os.makedirs(parent, exist_ok=True)
    local = tempfile.mkdtemp(prefix="tfos-upload-", dir=parent or None)
    try:
        yield local
        upload(local, url, overwrite=overwrite)
    finally:
        shutil.rmtree(local, ignore_errors=True)
