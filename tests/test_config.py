"""medcot.config: settings from the environment and sampling parameter validation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from medcot.config import (
    DEFAULT_ADAPTER,
    DEFAULT_BASE_MODEL,
    GenerationParams,
    Settings,
    is_embedded,
)
from medcot.errors import ConfigError


def test_defaults_follow_the_card() -> None:
    params = GenerationParams()
    assert (params.temperature, params.top_p, params.top_k) == (1.0, 0.95, 64)  # the card's Quick Start
    settings = Settings()
    assert settings.base_model == "google/gemma-3-270m-it"
    assert settings.adapter == "alphaaico/Medical-Diagnosis-COT-Gemma3-270M"
    assert settings.generation_defaults == GenerationParams(max_new_tokens=settings.max_new_tokens)


def test_from_env_empty_environment_gives_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.base_model == DEFAULT_BASE_MODEL
    assert settings.adapter == DEFAULT_ADAPTER
    assert (settings.max_new_tokens, settings.max_input_tokens) == (512, 2048)
    assert (settings.dtype, settings.device, settings.cpu_mode) == ("auto", "auto", "auto")
    assert settings.merge_adapter is True
    assert settings.cache_dir is None
    assert settings.load_wait_s == 180
    assert settings.hf_token is None


def test_from_env_reads_every_setting() -> None:
    settings = Settings.from_env(
        {
            "MEDCOT_BASE_MODEL": " /models/base ",
            "MEDCOT_ADAPTER": "/models/adapter",
            "MEDCOT_MAX_NEW_TOKENS": " 100 ",
            "MEDCOT_MAX_INPUT_TOKENS": "64",
            "MEDCOT_DTYPE": "Float32",
            "MEDCOT_DEVICE": "CPU",
            "MEDCOT_MERGE": "no",
            "MEDCOT_CPU_MODE": " Auto ",
            "MEDCOT_CACHE_DIR": "~/medcot-cache",
            "MEDCOT_LOAD_WAIT_S": "5",
            "HF_TOKEN": " hf_secret ",
        }
    )
    assert settings.base_model == "/models/base"
    assert settings.adapter == "/models/adapter"
    assert (settings.max_new_tokens, settings.max_input_tokens) == (100, 64)
    assert (settings.dtype, settings.device) == ("float32", "cpu")
    assert settings.merge_adapter is False
    assert settings.cpu_mode == "auto"
    assert settings.cache_dir == Path("~/medcot-cache").expanduser()
    assert settings.load_wait_s == 5
    assert settings.hf_token == "hf_secret"


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_adapter_means_base_alone(value: str) -> None:
    assert Settings.from_env({"MEDCOT_ADAPTER": value}).adapter is None


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_base_model_falls_back_to_default(value: str) -> None:
    assert Settings.from_env({"MEDCOT_BASE_MODEL": value}).base_model == DEFAULT_BASE_MODEL


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("false", False)]
)
def test_merge_switch(value: str, expected: bool) -> None:
    assert Settings.from_env({"MEDCOT_MERGE": value}).merge_adapter is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDCOT_MAX_NEW_TOKENS", "many"),
        ("MEDCOT_MAX_NEW_TOKENS", "1.5"),
        ("MEDCOT_MAX_NEW_TOKENS", "0"),
        ("MEDCOT_MAX_NEW_TOKENS", "-3"),
        ("MEDCOT_MAX_INPUT_TOKENS", "63"),
        ("MEDCOT_MAX_INPUT_TOKENS", "2k"),
        ("MEDCOT_DTYPE", "float64"),
        ("MEDCOT_DEVICE", "tpu"),
        ("MEDCOT_MERGE", "maybe"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env({name: value})
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_hf_token_never_in_repr() -> None:
    settings = Settings.from_env({"HF_TOKEN": "hf_very_secret_token"})
    assert settings.hf_token == "hf_very_secret_token"
    assert "hf_very_secret_token" not in repr(settings)
    assert "hf_very_secret_token" not in str(settings)


def test_blank_hf_token_is_none() -> None:
    assert Settings.from_env({"HF_TOKEN": "  "}).hf_token is None


def test_is_embedded() -> None:
    assert is_embedded("embedded")
    assert is_embedded("embedded:q4")
    assert not is_embedded("embedded-model")
    assert not is_embedded(DEFAULT_BASE_MODEL)


# ------------------------------------------------------------------------------------- GenerationParams.validated


def test_validated_accepts_and_converts() -> None:
    params = GenerationParams(max_new_tokens="32", temperature="0.5", top_p=1, top_k=10.0, repetition_penalty=1)
    checked = params.validated()
    assert checked == GenerationParams(max_new_tokens=32, temperature=0.5, top_p=1.0, top_k=10, repetition_penalty=1.0)
    assert type(checked.max_new_tokens) is int and type(checked.top_k) is int
    assert type(checked.temperature) is float and type(checked.top_p) is float
    assert params.max_new_tokens == "32"  # the original is left alone


def test_validated_keeps_the_limits_inclusive() -> None:
    low = GenerationParams(max_new_tokens=1, temperature=0, top_p=0.01, top_k=0, repetition_penalty=1.0)
    high = GenerationParams(max_new_tokens=4096, temperature=2.0, top_p=1.0, top_k=1000, repetition_penalty=2.0)
    assert low.validated() == low
    assert high.validated() == high


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 4097),
        ("max_new_tokens", 1.5),
        ("max_new_tokens", True),
        ("max_new_tokens", "ten"),
        ("max_new_tokens", None),
        ("max_new_tokens", math.nan),
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", False),
        ("temperature", "hot"),
        ("temperature", [1.0]),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_p", "nan"),
        ("top_k", -1),
        ("top_k", 1001),
        ("top_k", 3.5),
        ("repetition_penalty", 0.9),
        ("repetition_penalty", 2.5),
        ("repetition_penalty", -math.inf),
    ],
)
def test_validated_rejects_naming_the_parameter(name: str, value: object) -> None:
    params = dataclasses.replace(GenerationParams(), **{name: value})
    with pytest.raises(ValueError, match=rf"^{name} must be") as caught:
        params.validated()
    assert not isinstance(caught.value, ConfigError)
