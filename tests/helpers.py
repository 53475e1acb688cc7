"""Shared test helpers."""


def assert_config_round_trip(obj):
    """get_config -> from_config -> get_config gives the same config (habit 12)."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt
