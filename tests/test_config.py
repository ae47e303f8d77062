import dataclasses

import pytest

from fedmedlib import config


@pytest.mark.parametrize("profile", list(config.PROFILES.values()))
def test_every_value_has_a_reason(profile):
    fields = {f.name for f in dataclasses.fields(profile)} - {"name", "reasons"}
    assert set(profile.reasons) == fields
    assert all(len(r) > 10 for r in profile.reasons.values())


def test_cpu_profile_labels_what_it_reduces():
    assert "REDUCED" in config.CPU.reasons["width"] and "REDUCED" in config.CPU.reasons["rounds"]


def test_paper_profile_uses_the_papers_settings():
    p = config.PAPER
    assert (p.width, p.batch_size, p.lr, p.rounds, p.local_epochs, p.hospitals) == (64, 32, 1e-3, 50, 3, (5, 10, 20))


def test_profile_from_environment_and_errors(monkeypatch):
    monkeypatch.setenv("FEDMED_PROFILE", "cpu")
    assert config.get_profile() is config.CPU
    assert config.get_profile("PAPER") is config.PAPER
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        config.get_profile("gpu")


def test_describe_lists_values_with_reasons():
    text = config.QUICK.describe()
    assert "width" in text and "# 16 channels" in text
