import pytest

from governance.env import SettingError, env_bool, env_int, env_list


def test_it_reads_true_and_false_strictly(monkeypatch):
    monkeypatch.setenv("FLAG", "true")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "False")
    assert env_bool("FLAG", True) is False


def test_it_refuses_a_bool_that_is_not_true_or_false(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    with pytest.raises(SettingError, match="FLAG must be true or false"):
        env_bool("FLAG", False)


def test_it_refuses_a_number_that_is_not_whole(monkeypatch):
    monkeypatch.setenv("LIMIT", "12.5")
    with pytest.raises(SettingError, match="LIMIT must be a whole number"):
        env_int("LIMIT", 1)


def test_it_splits_lists_and_uses_defaults(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]
    monkeypatch.delenv("HOSTS")
    assert env_list("HOSTS", ["x"]) == ["x"]


def test_the_web_process_refuses_to_start_without_a_secret_key(tmp_path):
    import subprocess
    import sys

    env = {"DEBUG": "false", "CAUSEWAY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", "import governance.wsgi"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
