"""Where a model's files come from: a local folder as is, or a Hub repo through huggingface_hub (its errors in
sentences for users); and which of the folders' tokenizers the model gets."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from medcot.config import Settings, is_embedded
from medcot.errors import ModelLoadError
from medcot.model.memory import drop_tokenizer_build_data
from medcot.model.progress import Progress
from medcot.prompt import ensure_chat_template

# Hub files worth fetching: weights as safetensors, configs, tokenizer files; never .bin/.pt/.gguf duplicates.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def scrub_token(text: str, token: str | None) -> str:
    """``text`` with the HF token blanked out: error messages reach users and logs."""
    return text.replace(token, "***") if token else text


def is_hub_unreachable(exc: BaseException) -> bool:
    """True for errors meaning "no network / offline mode", as opposed to "the repo says no"."""
    if isinstance(exc, GatedRepoError | RepositoryNotFoundError | RevisionNotFoundError):
        return False
    return isinstance(exc, OSError | ConnectionError) or "Connect" in type(exc).__name__


def fetch(
    location: str, settings: Settings, progress: Progress, role: str, patterns: list[str] = _HUB_PATTERNS
) -> Path:
    """A local folder as is, or a Hub repo downloaded (or found in the cache) through huggingface_hub."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if location.startswith((".", "/", "~")) or location.count("/") > 1:
        raise ModelLoadError(f"The {role} folder `{location}` does not exist. Check the path you configured.")

    class ReportingTqdm(tqdm):  # snapshot_download's file count, reported to our progress callback
        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            if self.total:
                progress(f"Downloading {role}: {self.n:.0f}/{self.total:.0f} files", self.n / self.total)
            return result

    progress(f"Fetching the {role} `{location}` from the Hugging Face Hub", None)
    try:
        folder = snapshot_download(
            location, token=settings.hf_token, allow_patterns=patterns, tqdm_class=ReportingTqdm
        )
    except GatedRepoError:
        raise ModelLoadError(
            f"The {role} `{location}` is gated. Accept its license on its Hugging Face page, then set HF_TOKEN "
            "(a Space secret) to a read token of that account and restart."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelLoadError(
            f"The {role} `{location}` was not found on the Hugging Face Hub (or it is private). "
            "Check the repo id you configured, or set HF_TOKEN if it is private."
        ) from None
    except Exception as exc:
        if isinstance(exc, HfHubHTTPError) and exc.response.status_code == 401:  # the Hub answered: not unreachable
            raise ModelLoadError(
                f"The Hugging Face Hub refused the token while fetching the {role} `{location}`: HF_TOKEN is invalid "
                "or expired. Set HF_TOKEN to a valid read token and restart."
            ) from None
        if is_hub_unreachable(exc):
            raise ModelLoadError(
                f"Could not download the {role} `{location}`: the Hugging Face Hub cannot be reached and it is not "
                "in the local cache. Check the network, point the setting at a local folder, or run the embedded "
                "model (MEDCOT_BASE_MODEL=embedded)."
            ) from None
        raise ModelLoadError(
            f"Could not download the {role} `{location}`: {scrub_token(str(exc), settings.hf_token)}"
        ) from None
    return Path(folder)


def base_folder(settings: Settings, progress: Progress, patterns: list[str] = _HUB_PATTERNS) -> Path:
    """The base model's folder: the embedded base converted once, a local folder, or a Hub repo fetched (also what
    `python -m training` trains on)."""
    if not is_embedded(settings.base_model):
        return fetch(settings.base_model, settings, progress, "base model", patterns)
    from medcot.model import embedded

    try:
        return embedded.embedded_model_dir(settings.cache_dir, progress)
    except Exception as exc:
        raise ModelLoadError(f"The embedded model could not be prepared: {exc}") from None


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def ships_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def load_tokenizer(primary: Path, fallback: Path | None) -> PreTrainedTokenizerBase:
    """The adapter location's tokenizer when it ships one, else the base's; always with a chat template."""
    source = primary if ships_tokenizer(primary) or fallback is None else fallback
    tokenizer = drop_tokenizer_build_data(AutoTokenizer.from_pretrained(source))
    ensure_chat_template(tokenizer)
    return tokenizer
