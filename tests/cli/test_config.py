"""The client's config file: location, atomic 0600 writes, environment overrides."""

import stat

import pytest

from sshca.cli import config
from sshca.cli.errors import CommandError


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(config.SERVER_ENV, raising=False)
    monkeypatch.delenv(config.TOKEN_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_config_path_follows_xdg(xdg):
    assert config.config_path() == xdg / "sshca" / "config.toml"


def test_config_path_defaults_to_home(xdg, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config.config_path() == tmp_path / "home" / ".config" / "sshca" / "config.toml"


def test_config_path_ignores_relative_xdg(xdg, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert config.config_path() == tmp_path / "home" / ".config" / "sshca" / "config.toml"


def test_write_config_mode_0600(xdg):
    path = config.write_config({"server": "http://127.0.0.1:1", "token": "secret"})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.read_config() == {"server": "http://127.0.0.1:1", "token": "secret"}
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_write_config_replaces_loose_file(xdg):
    path = config.config_path()
    path.parent.mkdir(parents=True)
    path.write_text('server = "http://old"\n')
    path.chmod(0o644)

    config.write_config({"server": "http://new", "token": "t"})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.read_config()["server"] == "http://new"


def test_read_config_missing_is_empty(xdg):
    assert config.read_config() == {}


def test_read_config_invalid_toml(xdg):
    path = config.config_path()
    path.parent.mkdir(parents=True)
    path.write_text("server = \n")

    with pytest.raises(CommandError, match="invalid TOML in .*config.toml.*sshca login"):
        config.read_config()


def test_load_settings_from_file(xdg):
    config.write_config({"server": "http://127.0.0.1:8080/", "token": "abc"})

    settings = config.load_settings()

    assert settings.server == "http://127.0.0.1:8080"
    assert settings.token == "abc"


def test_environment_overrides_file(xdg, monkeypatch):
    config.write_config({"server": "http://file:1", "token": "from-file"})
    monkeypatch.setenv(config.SERVER_ENV, "http://env:2")
    monkeypatch.setenv(config.TOKEN_ENV, "from-env")

    settings = config.load_settings()

    assert settings.server == "http://env:2"
    assert settings.token == "from-env"


def test_environment_overrides_one_value(xdg, monkeypatch):
    config.write_config({"server": "http://file:1", "token": "from-file"})
    monkeypatch.setenv(config.TOKEN_ENV, "from-env")

    settings = config.load_settings()

    assert settings.server == "http://file:1"
    assert settings.token == "from-env"


def test_missing_server_says_login(xdg):
    with pytest.raises(CommandError, match=r"run `sshca login --server URL` or set SSHCA_SERVER"):
        config.load_settings()


def test_missing_token_says_login(xdg, monkeypatch):
    monkeypatch.setenv(config.SERVER_ENV, "http://127.0.0.1:9")
    with pytest.raises(CommandError, match=r"sshca login --server http://127.0.0.1:9"):
        config.load_settings()


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://host", "http://", "http://h/?a=b", ""])
def test_invalid_server_url(url):
    with pytest.raises(CommandError, match="invalid server URL"):
        config.normalize_server_url(url)


def test_settings_repr_hides_token():
    settings = config.Settings(server="http://h", token="very-secret-token")
    assert "very-secret-token" not in repr(settings)


def test_stored_token_not_sent_elsewhere(xdg, monkeypatch):
    config.write_config({"server": "http://file:1", "token": "from-file"})
    monkeypatch.setenv(config.SERVER_ENV, "http://other:2")

    with pytest.raises(CommandError, match=r"no API token for http://other:2"):
        config.load_settings()


def test_stored_token_with_same_server_from_env(xdg, monkeypatch):
    config.write_config({"server": "http://file:1", "token": "from-file"})
    monkeypatch.setenv(config.SERVER_ENV, "http://file:1/")

    assert config.load_settings().token == "from-file"
