"""Pretrained models from a local folder or a Hub repository, as diffusers' example scripts load them.

:func:`resolve_pretrained` turns ``--pretrained_path`` / ``--projector_path`` (+ subfolder, ``--revision``,
``--variant``, ``--cache_dir``) into a :class:`PretrainedSource` and tells a pipeline from a single model by its
``model_index.json``, on the Hub too (one ``hf_hub_download``, served from the cache when offline). The loaders read
safetensors only: a folder or repository with nothing but pickled ``.bin`` weights is refused with an error that
says so, since unpickling an untrusted file can run code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from diffusers import AutoencoderKL, VQModel
from huggingface_hub import hf_hub_download, list_repo_files
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ..models import LMDModel
from ..projector import Projector

PROJECTOR_CLASSES = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
PROJECTOR_COMPONENTS = ("vae", "vqvae")  # the names diffusers' pipelines give their autoencoder, in order of preference
MODEL_INDEX = "model_index.json"
CONVERT_HINT = (
    "diffusers-lmd loads safetensors weights only, since unpickling a .bin file can run arbitrary code. If you trust "
    "the file, convert it once: `m = Cls.from_pretrained(path, use_safetensors=False); "
    "m.save_pretrained(out, safe_serialization=True)`, and load `out`."
)


@dataclass(frozen=True)
class PretrainedSource:
    """Where a pretrained model lives and how to fetch it.

    Args:
        path: a local folder or a Hub repository id.
        subfolder: the folder inside ``path`` that holds the model (a pipeline component such as ``vae``).
        revision / variant / cache_dir / token: passed to every ``from_pretrained`` (ignored for local folders,
            except ``variant``).
        is_local: whether ``path`` is a local folder.
        model_index: the parsed ``model_index.json`` at ``path`` / ``subfolder`` when it is a pipeline, else ``None``.
    """

    path: str
    subfolder: str | None = None
    revision: str | None = None
    variant: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    is_local: bool = True
    model_index: Mapping | None = None

    @property
    def is_pipeline(self) -> bool:
        return self.model_index is not None

    def component(self, name: str) -> PretrainedSource:
        """The same source pointed at the pipeline component ``name`` (its subfolder)."""
        subfolder = f"{self.subfolder}/{name}" if self.subfolder else name
        return dataclasses.replace(self, subfolder=subfolder, model_index=None)

    def components(self, class_names: Iterable[str]) -> list[str]:
        """The pipeline's components whose class is one of ``class_names``, in ``model_index.json`` order."""
        wanted = set(class_names)
        entries = (self.model_index or {}).items()
        return [name for name, value in entries if isinstance(value, list) and len(value) == 2 and value[1] in wanted]

    def config_kwargs(self) -> dict:
        """Keyword arguments for ``ConfigMixin.load_config``."""
        return dict(subfolder=self.subfolder, revision=self.revision, cache_dir=self.cache_dir, token=self.token)

    def load_kwargs(self) -> dict:
        """Keyword arguments for ``ModelMixin.from_pretrained``: safetensors only, this source's variant."""
        return {**self.config_kwargs(), "variant": self.variant, "use_safetensors": True}

    def __str__(self) -> str:
        extras = [f"{k} {v!r}" for k, v in (("subfolder", self.subfolder), ("revision", self.revision)) if v]
        extras += [f"variant {self.variant!r}"] if self.variant else []
        return f"{self.path!r}" + (f" ({', '.join(extras)})" if extras else "")


def resolve_pretrained(
    path: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    flag: str = "--pretrained_path",
) -> PretrainedSource:
    """A local folder or Hub repository id as a :class:`PretrainedSource`; ``flag`` names it in errors.

    A ``model_index.json`` at ``path`` / ``subfolder`` marks a pipeline. On the Hub it is fetched with
    ``hf_hub_download`` (from the cache when offline); a repository or revision that does not exist is a
    ``ValueError`` here, before anything is loaded.
    """
    path = os.fspath(path) if path is not None else ""
    if not path:
        raise ValueError(f"{flag} must name a local folder or a Hub repository id such as 'user/model'.")
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    common = dict(subfolder=subfolder or None, revision=revision, variant=variant, cache_dir=cache_dir, token=token)
    if os.path.isdir(path):
        root = os.path.join(path, subfolder) if subfolder else path
        if not os.path.isdir(root):
            raise ValueError(f"{flag} {path!r} has no subfolder {subfolder!r}: check the subfolder name.")
        index_path = os.path.join(root, MODEL_INDEX)
        model_index = _read_json(index_path) if os.path.isfile(index_path) else None
        return PretrainedSource(path, is_local=True, model_index=model_index, **common)
    try:
        validate_repo_id(path)
    except HFValidationError as err:
        raise ValueError(
            f"{flag} {path!r} is neither an existing local folder nor a Hub repository id ('user/model'): check the "
            "path."
        ) from err
    model_index = _hub_model_index(PretrainedSource(path, is_local=False, **common), flag)
    return PretrainedSource(path, is_local=False, model_index=model_index, **common)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _hub_model_index(source: PretrainedSource, flag: str) -> dict | None:
    """The repository's ``model_index.json``, ``None`` when it has none (or none is cached, offline)."""
    try:
        file = hf_hub_download(source.path, MODEL_INDEX, **source.config_kwargs())
    except RevisionNotFoundError as err:
        raise ValueError(f"{flag} {source}: the Hub repository has no revision {source.revision!r}.") from err
    except RepositoryNotFoundError as err:
        raise ValueError(
            f"{flag} {source}: no such Hub repository, or a private or gated one you cannot access (log in with "
            "`hf auth login`). A local folder that does not exist is read as a repository id, so check the path too."
        ) from err
    except EntryNotFoundError:
        return None
    return _read_json(file)


def load_pretrained_config(source: PretrainedSource, flag: str = "--pretrained_path") -> dict:
    """The ``config.json`` of the model at ``source``, or a ``ValueError`` saying why it cannot be read."""
    try:
        return VQModel.load_config(source.path, **source.config_kwargs())
    except (OSError, ValueError) as err:
        hint = ""
        if source.is_pipeline:
            hint = f" It is a pipeline (model_index.json): name a component, e.g. subfolder {_first(source)!r}."
        raise ValueError(f"{flag} {source}: no model config could be read ({err}).{hint}") from err


def _first(source: PretrainedSource) -> str:
    names = [k for k, v in (source.model_index or {}).items() if isinstance(v, list)]
    return names[0] if names else "vae"


def load_pretrained_model(model_cls, source: PretrainedSource, flag: str = "--pretrained_path"):
    """``model_cls.from_pretrained`` from ``source`` with safetensors only, wrapping failures in a ``ValueError``
    that says what to do (``.bin``-only weights, a missing ``--variant`` file, an unreadable folder)."""
    try:
        return model_cls.from_pretrained(source.path, **source.load_kwargs())
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        pickled = pickle_only_weights(source)
        if pickled:
            files = ", ".join(pickled)
            raise ValueError(f"{flag} {source} holds only pickled weights ({files}). {CONVERT_HINT}") from err
        hint = ""
        if source.variant:
            hint = f" Is there a {source.variant!r} variant of its weights? Without --variant the default ones load."
        raise ValueError(f"{flag} {source}: the {model_cls.__name__} did not load: {err}.{hint}") from err


def pickle_only_weights(source: PretrainedSource) -> list[str]:
    """The ``.bin`` weight files at ``source`` when it has no ``.safetensors`` ones; ``[]`` otherwise or when the
    Hub cannot be asked (offline)."""
    prefix = f"{source.subfolder.strip('/')}/" if source.subfolder else ""
    if source.is_local:
        folder = os.path.join(source.path, source.subfolder or "")
        files = os.listdir(folder) if os.path.isdir(folder) else []
    else:
        try:
            listed = list_repo_files(source.path, revision=source.revision, token=source.token)
        except Exception:  # offline, no network, no access: only the diagnosis is lost, the caller still raises
            return []
        files = [f[len(prefix) :] for f in listed if f.startswith(prefix) and "/" not in f[len(prefix) :]]
    if any(f.endswith(".safetensors") for f in files):
        return []
    return sorted(f for f in files if f.endswith(".bin"))


def load_pretrained_lmd(
    source: PretrainedSource, flag: str = "--pretrained_path", with_projector: bool = True
) -> tuple[LMDModel, Projector | None]:
    """The ``LMDModel`` of a saved LMD pipeline (its ``transformer/``) or model, and, ``with_projector``, the
    pipeline's projector (``None`` for a bare model, or when the caller brings its own); a ``ValueError`` naming
    ``flag`` for anything else."""
    if source.is_pipeline:
        if "transformer" not in source.model_index:
            raise ValueError(
                f"{flag} {source} is a pipeline without a transformer/ component, not an LMDPipeline: pass the "
                "output_dir (or Hub repository) of training/train_lmd.py."
            )
        model = load_pretrained_model(LMDModel, source.component("transformer"), flag)
        vae = load_pretrained_projector(source, flag=flag, subfolder_flag=None) if with_projector else None
        return model, vae
    class_name = load_pretrained_config(source, flag).get("_class_name")
    if class_name != LMDModel.__name__:
        raise ValueError(f"{flag} {source} holds a {class_name!r}, not an LMDPipeline or LMDModel.")
    return load_pretrained_model(LMDModel, source, flag), None


def load_pretrained_projector(
    source: PretrainedSource, flag: str = "--projector_path", subfolder_flag: str | None = "--projector_subfolder"
) -> VQModel | AutoencoderKL:
    """The frozen ``VQModel`` / ``AutoencoderKL`` at ``source``: a projector folder or repository, or a pipeline's
    autoencoder (``vae``, or the one component of a projector class), in eval mode with gradients off."""
    if source.is_pipeline:
        found = source.components(PROJECTOR_CLASSES)
        preferred = [name for name in PROJECTOR_COMPONENTS if name in found] or found
        if not preferred:
            raise ValueError(
                f"{flag} {source} is a pipeline without a VQModel or AutoencoderKL component (it has "
                f"{sorted(k for k in source.model_index if not k.startswith('_'))}): pass a projector folder or repo."
            )
        source = source.component(preferred[0])
    config = load_pretrained_config(source, flag)
    class_name = config.get("_class_name")
    if class_name not in PROJECTOR_CLASSES:
        where = f" (or pick its autoencoder with {subfolder_flag})" if subfolder_flag and not source.subfolder else ""
        raise ValueError(
            f"{flag} {source} holds a {class_name!r}, not a VQModel or AutoencoderKL: pass a projector folder, a "
            f"Hub repository such as 'stabilityai/sd-vae-ft-mse', or an LMD pipeline{where}."
        )
    vae = load_pretrained_model(PROJECTOR_CLASSES[class_name], source, flag)
    return vae.requires_grad_(False).eval()
