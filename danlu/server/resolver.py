"""API model names → what to load. Names from API calls are resolved here, never by `loader.resolve`, which
would read an existing file path.

A name is, in this order: one the operator served with `--model`; a LoRA adapter `BASE+NAME` from
$DANLU_HOME/adapters; an Ollama-style alias from the catalog (`qwen2.5-coder:1.5b`, `qwen3:8b-q8_0`); a catalog
`id` or `id:variant` (Ollama clients add `:latest`, read as the default variant); a name registered with
`danlu remote add`. Every part is checked with the store's safe-name rule. Models that run their own code are
refused unless the server trusts remote code; models danlu cannot run say why.
"""

from __future__ import annotations

from dataclasses import replace

from danlu import catalog, loader, remotes
from danlu.catalog.schema import ModelSpec
from danlu.config import Settings
from danlu.errors import DanluError
from danlu.finetune.adapters import served_ids, split_model_id
from danlu.loader import Resolved
from danlu.server.errors import ApiError
from danlu.store import Store, safe_name

LATEST = "latest"


def not_found(message: str) -> ApiError:
    return ApiError(404, f"{message}（GET /v1/models 列出可用模型 / GET /v1/models lists the models served）",
                    param="model", code="model_not_found")


class ModelResolver:
    """Resolves names for one server: its settings, its `--model` aliases."""

    def __init__(self, base: Settings, trust_remote_code: bool):
        self.base, self.trust_remote_code = base, trust_remote_code
        self.aliases: dict[str, Resolved] = {}

    def add_alias(self, name: str) -> str:
        """A `--model` given by the operator (catalog id, remote name or path): served under its name."""
        resolved = loader.resolve(name, settings=self.base)
        key = resolved.label if resolved.spec else (resolved.path.stem if resolved.backend != "remote" else name)
        self.aliases[key] = resolved
        return key

    def resolve(self, name: str) -> tuple[str, Resolved]:
        """(key, what to load); unknown names are 404s that say what exists."""
        if name in self.aliases:
            return name, self.aliases[name]
        if split_model_id(name):
            return self._adapter(name)
        try:
            return self._named(name)
        except DanluError as exc:
            raise not_found(str(exc)) from None

    def _named(self, name: str) -> tuple[str, Resolved]:
        aliased = catalog.resolve_alias(name)
        if aliased is not None:
            return self._catalog(*aliased)
        model_id, _, variant = name.partition(":")
        variant = "" if variant == LATEST else variant
        safe_name(model_id)
        if variant:
            safe_name(variant, "variant")
        remote = None if variant else remotes.find(model_id, self.base)
        if remote is not None:
            return model_id, Resolved(None, None, remote.record_path, "remote")
        return self._catalog(model_id, variant or None)

    def catalog_target(self, name: str) -> tuple[ModelSpec, str | None]:
        """The catalog model and variant a name means, downloaded or not (for pull and delete)."""
        try:
            aliased = catalog.resolve_alias(name)
            model_id, _, variant = name.partition(":")
            model_id, variant = aliased if aliased is not None else (model_id, variant or None)
            variant = None if variant == LATEST else variant
            safe_name(model_id)
            spec = catalog.get(model_id)
            self.check_allowed(spec)
            return spec, (spec.variant(variant).name if variant else None)
        except (DanluError, KeyError) as exc:
            raise not_found(str(exc).strip("'\"")) from None

    def _catalog(self, model_id: str, variant: str | None) -> tuple[str, Resolved]:
        spec = catalog.get(model_id)
        self.check_allowed(spec)  # before the download check: refused whether pulled or not
        try:
            chosen = spec.variant(variant)
        except KeyError as exc:
            raise DanluError(str(exc).strip("'\"")) from None
        store = Store(self.base)
        if not store.is_complete(spec, chosen):
            raise DanluError(f"模型 {spec.id}:{chosen.name} 尚未下载 / not downloaded: run `danlu pull {spec.id}`")
        key = f"{spec.id}:{chosen.name}"
        if key in self.aliases:
            return key, self.aliases[key]
        return key, Resolved(spec, chosen, store.weight_path(spec, chosen), spec.backend_for(chosen))

    def _adapter(self, name: str) -> tuple[str, Resolved]:
        """`BASE+NAME`: a LoRA from $DANLU_HOME/adapters on its (pulled) catalog base, served under its own id."""
        info = served_ids(self.base).get(name)
        if info is None:
            raise ApiError(404, f"没有适配器 {name}（`danlu adapters` 列出已有的）/ no adapter {name} (see `danlu adapters`)",
                           param="model", code="model_not_found")
        base_id, _, variant = info.base.partition(":")
        try:
            _, base = self._catalog(base_id, variant or None)
        except DanluError as exc:
            raise not_found(str(exc)) from None
        return name, replace(base, adapters=(info.path,))

    def check_allowed(self, spec: ModelSpec) -> None:
        """Remote-code models only with --trust-remote-code; models danlu cannot run say why."""
        if spec.trust_remote_code and not self.trust_remote_code:
            raise ApiError(403, f"{spec.id} 需要运行模型自带的代码，服务器未以 --trust-remote-code 启动 / {spec.id} runs "
                           "code shipped with its weights; this server was not started with --trust-remote-code",
                           type="permission_error", param="model", code="remote_code_not_trusted")
        if spec.unsupported:
            raise ApiError(400, spec.unsupported, param="model", code="model_unsupported")

    # --- listing ----------------------------------------------------------------------------
    def served_names(self, loaded: list[str] = ()) -> list[str]:
        """Aliases and loaded models, then every pulled catalog model, then the remotes and the adapters."""
        names = list(dict.fromkeys([*self.aliases, *loaded]))
        store = Store(self.base)
        names += [spec.id for spec in self.pulled_specs(store)]
        names += [r.name for r in remotes.list_remotes(self.base)]
        names += [model_id for model_id, info in served_ids(self.base).items() if _base_pulled(info.base, store)]
        return list(dict.fromkeys(names))

    def pulled_specs(self, store: Store | None = None) -> list[ModelSpec]:
        """Catalog models whose default variant is downloaded and that this server may run."""
        store = store or Store(self.base)
        return [spec for spec in catalog.all_models() if self._runnable(spec) and store.is_complete(spec, spec.variant())]

    def _runnable(self, spec: ModelSpec) -> bool:
        return not spec.unsupported and (self.trust_remote_code or not spec.trust_remote_code)


def _base_pulled(base: str, store: Store) -> bool:
    """Whether an adapter's catalog base (`id` or `id:variant`) is downloaded (a path base is not served by id)."""
    base_id, _, variant = base.partition(":")
    try:
        spec = catalog.get(base_id)
        return store.is_complete(spec, spec.variant(variant or None))
    except DanluError:
        return False
