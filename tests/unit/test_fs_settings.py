"""The file-system settings (tfos.config.FsSettings): what TFOS_HDFS_CLIENT and TFOS_S3_ADDRESSING_STYLE
accept, their defaults, and the error a bad value gives."""

import pytest

from tfos import fs
from tfos.config import FsSettings
from tfos.errors import ConfigError


def test_defaults_when_unset_or_empty():
    assert FsSettings.from_env({}) == FsSettings("native", "")
    assert FsSettings.from_env({"TFOS_HDFS_CLIENT": "", "TFOS_S3_ADDRESSING_STYLE": ""}) == FsSettings("native", "")


@pytest.mark.parametrize("client, expected", [("native", "native"), ("pyarrow", "pyarrow"), (" PyArrow ", "pyarrow")])
def test_hdfs_client_values(client, expected):
    assert FsSettings.from_env({"TFOS_HDFS_CLIENT": client}).hdfs_client == expected


@pytest.mark.parametrize("style, expected", [("path", "path"), ("virtual", "virtual"), ("auto", "auto"),
                                             (" Virtual ", "virtual")])
def test_s3_addressing_style_values(style, expected):
    assert FsSettings.from_env({"TFOS_S3_ADDRESSING_STYLE": style}).s3_addressing_style == expected


def test_bad_values_name_the_variable_and_what_it_accepts():
    with pytest.raises(ConfigError, match=r"TFOS_HDFS_CLIENT must be 'native' \(hdfs-native, the default\) or "
                                          r"'pyarrow' \(pyarrow's libhdfs client\), not 'libhdfs'"):
        FsSettings.from_env({"TFOS_HDFS_CLIENT": "libhdfs"})
    with pytest.raises(ConfigError, match=r"TFOS_S3_ADDRESSING_STYLE must be 'path', 'virtual' or 'auto' .*"
                                          r"unset: path when an S3 endpoint is set, else auto\), not 'dns'"):
        FsSettings.from_env({"TFOS_S3_ADDRESSING_STYLE": "dns"})


def test_os_environ_is_the_default_source(monkeypatch):
    monkeypatch.setenv("TFOS_HDFS_CLIENT", "pyarrow")
    monkeypatch.setenv("TFOS_S3_ADDRESSING_STYLE", "virtual")
    assert FsSettings.from_env() == FsSettings("pyarrow", "virtual")


def test_fs_takes_its_settings_from_fs_settings():
    assert fs._s3_options({"TFOS_S3_ADDRESSING_STYLE": "Virtual", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
                          )["config_kwargs"]["s3"] == {"addressing_style": "virtual"}
    with pytest.raises(ConfigError, match=r"TFOS_S3_ADDRESSING_STYLE must be"):
        fs.filesystem("s3://bucket/key", env={"TFOS_S3_ADDRESSING_STYLE": "dns"})
    assert fs._hdfs_client("hdfs://nn:8020/x", {"TFOS_HDFS_CLIENT": "pyarrow"})[0] == "pyarrow"
