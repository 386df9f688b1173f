"""A dataplane table as data, and the ``nft`` transactions that bring the kernel to it.

kube-proxy's nftables mode never deletes its table to change it: a first (full) sync
declares every chain, flushes it and writes its rules, refills the maps, and deletes what is
no longer wanted, all in one transaction; later (partial) syncs touch only the chains and map
elements that changed since the last applied state.  So a restarted agent takes over its
predecessor's rules without a moment of no rules, dynamic sets (session affinity) keep their
entries, and a sync after one endpoint changed writes a few lines, not the whole table.
Pure: the same inputs give the same script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()
    #: for a base chain, e.g. ``type nat hook output priority -100; policy accept;``
    head: str = ""


@dataclass(frozen=True)
class Store:
    """A named set or map.  ``elements`` is None for a set the kernel fills itself
    (``flags dynamic``): the sync never touches its entries."""
    kind: str  # "set" or "map"
    name: str
    definition: str  # e.g. ``type ipv4_addr : verdict;``
    elements: dict[str, str] | None = field(default_factory=dict)  # key -> value ("" for sets)


@dataclass
class Table:
    family: str
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    stores: dict[str, Store] = field(default_factory=dict)

    def add_chain(self, name: str, rules: Iterable[str], head: str = "") -> None:
        self.chains[name] = Chain(name, tuple(rules), head)

    def add_store(self, kind: str, name: str, definition: str,
                  elements: dict[str, str] | None = None, dynamic: bool = False) -> None:
        self.stores[name] = Store(kind, name, definition, None if dynamic else dict(elements or {}))

    def add_element(self, store: str, key: str, value: str = "") -> bool:
        """Add ``key`` unless the store has it already (the first claim wins, so a
        duplicate can never fail a sync); whether it was added."""
        elements = self.stores[store].elements
        assert elements is not None, f"{store} is filled by the kernel"
        if key in elements:
            return False
        elements[key] = value
        return True


@dataclass(frozen=True)
class Present:
    """What the kernel holds of the table now (``nft -j list table``)."""
    chains: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, items: list[dict[str, Any]]) -> "Present":
        def names(kind: str) -> frozenset[str]:
            return frozenset(str(i[kind]["name"]) for i in items
                             if isinstance(i.get(kind), dict) and "name" in i[kind])
        return cls(names("chain"), names("set"), names("map"))


def _element(key: str, value: str) -> str:
    return f"{key} : {value}" if value else key


def _write_chain(t: Table, chain: Chain, out: list[str], new: bool) -> None:
    prefix = f"{t.family} {t.name}"
    if not new:
        out.append(f"flush chain {prefix} {chain.name}")
    out += [f"add rule {prefix} {chain.name} {r}" for r in chain.rules]


def _declare(t: Table, out: list[str], chains: Iterable[Chain], stores: Iterable[Store]) -> None:
    prefix = f"{t.family} {t.name}"
    for s in stores:
        out.append(f"add {s.kind} {prefix} {s.name} {{ {s.definition} }}")
    for c in chains:
        out.append(f"add chain {prefix} {c.name}" + (f" {{ {c.head} }}" if c.head else ""))


def _add_elements(t: Table, store: Store, keys: Iterable[str], out: list[str]) -> None:
    assert store.elements is not None
    items = [_element(k, store.elements[k]) for k in keys]
    if items:
        out.append(f"add element {t.family} {t.name} {store.name} {{ {', '.join(items)} }}")


def _remove_stale(t: Table, chains: Iterable[str], stores: Iterable[tuple[str, str]],
                  out: list[str]) -> None:
    """Flush every stale chain before deleting any: one may jump to another."""
    prefix = f"{t.family} {t.name}"
    chains = sorted(chains)
    out += [f"flush chain {prefix} {c}" for c in chains]
    out += [f"delete chain {prefix} {c}" for c in chains]
    out += [f"delete {kind} {prefix} {name}" for kind, name in sorted(stores)]


def full_sync(t: Table, present: Present) -> str:
    """The whole table written over whatever is there, in one transaction: no chain is
    ever missing, the kernel-filled sets keep their entries."""
    out = [f"add table {t.family} {t.name}"]
    _declare(t, out, t.chains.values(), t.stores.values())
    for chain in t.chains.values():
        _write_chain(t, chain, out, new=False)
    for s in t.stores.values():
        if s.elements is not None:
            out.append(f"flush {s.kind} {t.family} {t.name} {s.name}")
            _add_elements(t, s, sorted(s.elements), out)
    stale_stores = [("set", n) for n in present.sets if n not in t.stores] + \
                   [("map", n) for n in present.maps if n not in t.stores]
    _remove_stale(t, (c for c in present.chains if c not in t.chains), stale_stores, out)
    return "\n".join(out) + "\n"


def _present(t: Table) -> Present:
    return Present(frozenset(t.chains),
                   frozenset(n for n, s in t.stores.items() if s.kind == "set"),
                   frozenset(n for n, s in t.stores.items() if s.kind == "map"))


def partial_sync(old: Table, new: Table) -> str:
    """Only what differs between the applied ``old`` and the wanted ``new`` ("" when
    nothing does).  A store whose definition changed is replaced whole."""
    out: list[str] = []
    prefix = f"{new.family} {new.name}"
    redefined = {n for n, s in new.stores.items()
                 if n in old.stores and (old.stores[n].definition != s.definition
                                         or old.stores[n].kind != s.kind)}
    added_chains = [c for n, c in new.chains.items() if n not in old.chains]
    changed_chains = [c for n, c in new.chains.items()
                      if n in old.chains and old.chains[n] != c]
    stale_chains = [n for n in old.chains if n not in new.chains]
    # chains whose head (hook) changed cannot be altered in place
    rehooked = [c for c in changed_chains if c.head != old.chains[c.name].head]
    if redefined or rehooked:
        return full_sync(new, _present(old))
    _declare(new, out, added_chains, [s for n, s in new.stores.items() if n not in old.stores])
    for chain in added_chains:
        _write_chain(new, chain, out, new=True)
    for chain in changed_chains:
        _write_chain(new, chain, out, new=False)
    for name, store in new.stores.items():
        if store.elements is None:
            continue
        before = (old.stores[name].elements or {}) if name in old.stores else {}
        gone = sorted(k for k, v in before.items() if store.elements.get(k) != v)
        if gone:
            out.append(f"delete element {prefix} {name} {{ {', '.join(gone)} }}")
        _add_elements(new, store, sorted(k for k, v in store.elements.items()
                                         if before.get(k) != v), out)
    _remove_stale(new, stale_chains,
                  [(s.kind, n) for n, s in old.stores.items() if n not in new.stores], out)
    return "\n".join(out) + ("\n" if out else "")


def size(t: Table) -> int:
    """Rules plus map elements: what a full sync writes."""
    return sum(len(c.rules) for c in t.chains.values()) + \
        sum(len(s.elements or {}) for s in t.stores.values())
