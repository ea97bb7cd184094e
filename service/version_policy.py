"""Which versions of a model are served: Triton's version policy, in Triton's own JSON shape.

    {"latest": {"num_versions": 2}}     the newest N complete versions (the default, N = 1)
    {"all": {}}                         every complete version
    {"specific": {"versions": [1, 3]}}  exactly these

A model's policy is the ``version_policy`` of its newest version's ``config.json`` (the version being published
says how many of its predecessors stay), else the server's ``--version-policy`` (``latest:N``, ``all`` or
``specific:1,3``); ``--model NAME:V`` pins and the repository API's ``parameters.versions`` override both.
Requests that name no version get the newest served.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latest(_Strict):
    num_versions: int = Field(1, ge=1)


class All(_Strict):
    pass


class Specific(_Strict):
    versions: list[int] = Field(min_length=1)


class VersionPolicy(_Strict):
    latest: Latest | None = None
    all: All | None = None
    specific: Specific | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        given = [kind for kind in ("latest", "all", "specific") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a version policy is exactly one of latest, all, specific; found {given or 'none'}")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of the complete ones, ascending (``specific`` ones may be missing: the
        caller reports them)."""
        if self.all is not None:
            return sorted(available)
        if self.specific is not None:
            return sorted(set(self.specific.versions))
        assert self.latest is not None
        return sorted(available)[-self.latest.num_versions:]

    @property
    def falls_back(self) -> bool:
        """Whether an older version may stand in for a wanted one that cannot load (not for ``specific``)."""
        return self.specific is None

    def describe(self) -> str:
        if self.all is not None:
            return "all"
        if self.specific is not None:
            return "specific:" + ",".join(str(v) for v in self.specific.versions)
        assert self.latest is not None
        return f"latest:{self.latest.num_versions}"

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all`` or ``specific:V[,V...]``, as the ``--version-policy`` flag takes."""
        kind, _, value = text.strip().partition(":")
        try:
            if kind == "latest":
                return cls(latest=Latest(num_versions=int(value) if value else 1))
            if kind == "all" and not value:
                return cls(all=All())
            if kind == "specific":
                return cls(specific=Specific(versions=[int(v) for v in value.split(",") if v.strip()]))
        except ValueError as error:
            raise ValueError(f"version policy {text!r}: {error}") from error
        raise ValueError(f"version policy {text!r}: expected latest, latest:N, all or specific:V[,V...]")


LATEST = VersionPolicy(latest=Latest())
