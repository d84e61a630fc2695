"""The public API's docstrings follow numpydoc and agree with the signatures.

A small numpydoc parser (a section is a header line followed by a line of dashes of the same
length; an entry of Parameters / Other Parameters / Attributes is an unindented line
`name : type`, its description indented below it) checks, for every public function, method
and class listed in `public_api`:

* a one-line summary;
* a `Parameters` section when the signature has parameters, with one entry `name : type` per
  parameter (`self` / `cls` excepted) and no entry for a name the signature lacks; a
  `**kwargs`-style parameter is an entry `**name` (its type may be left out);
* options passed on through a `**name` parameter (the data options of `fit_em` / `fit_svi`,
  the fit and data options of `tl.transst`) go in an `Other Parameters` section, one entry
  each, checked against the names the code accepts (`PASSED_ON`); the data options must all be
  listed there;
* a default stated in an entry's type (`name : int, default 15`) that reads as a Python literal
  equals the signature's default (or the accepted option's default);
* a `Returns` section when the function returns a value;
* an `Examples` section with at least one `>>>` line.

The settings dataclasses' and `TransSTResult`'s `Attributes` sections list exactly their fields
(and, for the result, its public properties). The checker is shown to reject docstrings that
miss a parameter, name one that does not exist, or lack the required sections.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import MISSING, fields, is_dataclass

import pytest

ENTRY_SECTIONS = ("Parameters", "Other Parameters", "Attributes")
_ENTRY = re.compile(r"^(?P<names>\*{0,2}[A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)"
                    r"(?:\s+:(?:\s+(?P<type>.*))?)?$")
_DEFAULT = re.compile(r"(?:^|,)\s*default[:=]?\s+(?P<value>.+)$")


# --- the parser ---------------------------------------------------------------------------------

def sections(doc: str | None) -> dict[str, list[str]]:
    """Section title -> its lines (dedented, without the header and the dashes). The text before
    the first section is under ""."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, list[str]] = {"": []}
    current = ""
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        under = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if title and re.fullmatch(r"-{3,}", under) and len(under) == len(title) \
                and not lines[i].startswith(" "):
            current = title
            out.setdefault(current, [])
            i += 2
            continue
        out[current].append(lines[i])
        i += 1
    return out


def entries(lines: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The entries of a Parameters-like section as (name, type or None) (one per name of a
    `a, b : type` entry), and the unindented lines that are not entries."""
    found, bad = [], []
    for line in lines:
        if not line.strip() or line[0].isspace():
            continue
        m = _ENTRY.match(line.rstrip())
        if m is None:
            bad.append(line)
            continue
        for name in re.split(r"\s*,\s*", m.group("names")):
            found.append((name, m.group("type")))
    return found, bad


def documented_default(type_text: str | None):
    """(True, value) for a `default <literal>` in an entry's type, else (False, None)."""
    if not type_text:
        return False, None
    m = _DEFAULT.search(type_text)
    if m is None:
        return False, None
    try:
        return True, ast.literal_eval(m.group("value").strip().rstrip("."))
    except (ValueError, SyntaxError):
        return False, None


def returns_value(obj) -> bool:
    """Whether the function's own body has a `return <something other than None>`."""
    fn = inspect.unwrap(getattr(obj, "__func__", obj))
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return False
    tree = ast.parse(src)
    top = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, ast.Return) and child.value is not None and not (
                    isinstance(child.value, ast.Constant) and child.value.value is None):
                return True
            if walk(child):
                return True
        return False

    return walk(top)


def _parameters(obj) -> list[inspect.Parameter]:
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ("self", "cls") and not inspect.isclass(obj):
        params = params[1:]
    return params


def _star(p: inspect.Parameter) -> str:
    return {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return type(a) is type(b) and a == b or (isinstance(a, float) and isinstance(b, (int, float))
                                                and not isinstance(b, bool) and a == b)


def check(obj, passed_on: dict | None = None, complete: set | frozenset = frozenset()) -> list[str]:
    """The problems of `obj`'s docstring. `passed_on`: the names a `**name` parameter accepts ->
    their defaults (a list of the candidate defaults; `inspect.Parameter.empty` for none), the
    only names allowed in its Other Parameters section; `complete`: names that section must
    list."""
    doc = inspect.getdoc(obj)
    if not doc:
        return ["no docstring"]
    problems = []
    sec = sections(doc)
    lines = inspect.cleandoc(doc).splitlines()
    if not lines[0].strip() or (len(lines) > 1 and lines[1].strip()):
        problems.append("no one-line summary (a first line followed by a blank line)")
    params = _parameters(obj)
    by_star = {_star(p): p for p in params}
    documented: dict[str, str | None] = {}
    for title in ENTRY_SECTIONS:
        if title not in sec:
            continue
        found, bad = entries(sec[title])
        problems += [f"{title}: not an entry `name : type`: {line!r}" for line in bad]
        if title == "Parameters":
            seen = set()
            for name, typ in found:
                if name in seen:
                    problems.append(f"Parameters: {name} documented twice")
                seen.add(name)
                documented[name] = typ
    if params and "Parameters" not in sec:
        problems.append("no Parameters section")
    for star, p in by_star.items():
        if star in documented:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            typ = documented[star]
            if not typ:
                problems.append(f"Parameters: {star} has no type (`{star} : type`)")
                continue
            stated, value = documented_default(typ)
            if stated and p.default is not p.empty and not _same(value, p.default):
                problems.append(f"Parameters: {star} documents default {value!r}, the signature has "
                                f"{p.default!r}")
        elif p.kind is p.VAR_KEYWORD and "Other Parameters" in sec:
            continue  # the options are listed
        else:
            problems.append(f"Parameters: {star} is not documented")
    for name in documented:
        if name not in by_star:
            hint = next((f" (write {_star(p)})" for p in params if p.name == name.lstrip("*")), "")
            problems.append(f"Parameters: {name} is not a parameter of the signature{hint}")
    if "Other Parameters" in sec:
        found, _ = entries(sec["Other Parameters"])
        names = [n for n, _ in found]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            problems.append("Other Parameters without a **kwargs-style parameter to pass them on")
        allowed = passed_on or {}
        for name, typ in found:
            if name in by_star:
                problems.append(f"Other Parameters: {name} is in the signature (document it under "
                                "Parameters)")
            elif name not in allowed:
                problems.append(f"Other Parameters: {name} is not an accepted option")
            else:
                stated, value = documented_default(typ)
                defaults = [d for d in allowed[name] if d is not inspect.Parameter.empty]
                if stated and defaults and not all(_same(value, d) for d in defaults):
                    problems.append(f"Other Parameters: {name} documents default {value!r}, the code "
                                    f"has {defaults}")
        for name in sorted(set(complete) - set(names)):
            problems.append(f"Other Parameters: the accepted option {name} is not listed")
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"Other Parameters: {name} documented twice")
    if not inspect.isclass(obj) and returns_value(obj) and "Returns" not in sec and "Yields" not in sec:
        problems.append("no Returns section")
    if "Examples" not in sec:
        problems.append("no Examples section")
    elif not any(line.lstrip().startswith(">>>") for line in sec["Examples"]):
        problems.append("Examples section without a `>>>` line")
    return problems


# --- what the code accepts ----------------------------------------------------------------------

def _data_defaults() -> dict:
    from transst_bayes.data import DataSettings

    return {f.name: f.default for f in fields(DataSettings)}


def _signature_defaults(fn) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def data_options(fit) -> dict:
    """The data options `fit` accepts in `**data_options`: the fields of `DataSettings` that are
    not the fit's own arguments (`dtype` is), name -> [default]."""
    own = _signature_defaults(fit)
    return {k: [v] for k, v in _data_defaults().items() if k not in own}


def tl_transst_options() -> tuple[dict, set]:
    """What `tl.transst(**kwargs)` passes on: the data options and the keyword arguments of
    `fit_em` / `fit_svi` that `tl.transst` does not set itself (it sets seed from `rng`), name
    -> the candidate defaults; and the data options it must list."""
    import transst_bayes as tb
    from transst_bayes import tl

    own = set(_signature_defaults(tl.transst)) | {"seed"}
    out: dict[str, list] = {}
    for source in (_data_defaults(), _signature_defaults(tb.fit_em), _signature_defaults(tb.fit_svi)):
        for k, v in source.items():
            if k not in own:
                out.setdefault(k, []).append(v)
    fit_own = set(_signature_defaults(tb.fit_em))
    complete = {k for k in _data_defaults() if k not in own and k not in fit_own}
    return out, complete


def public_api() -> list[tuple[str, object]]:
    import transst_bayes as tb
    from transst_bayes import pl, pp, tl

    items = [("fit_em", tb.fit_em), ("fit_svi", tb.fit_svi), ("tl.transst", tl.transst),
             ("tl.markers", tl.markers), ("tl.transfer_breaking_genes", tl.transfer_breaking_genes),
             ("simulate", tb.simulate), ("TransSTResult", tb.TransSTResult), ("load_result", tb.load_result)]
    for name, member in vars(tb.TransSTResult).items():  # methods; properties: see below
        if not name.startswith("_") and (inspect.isfunction(member)
                                         or isinstance(member, (classmethod, staticmethod))):
            items.append((f"TransSTResult.{name}", getattr(tb.TransSTResult, name)))
    items += [(f"pp.{n}", getattr(pp, n)) for n in pp.__all__]
    items += [(f"pl.{n}", getattr(pl, n)) for n in pl.__all__]
    return items


API = dict(public_api())


def _options_for(name: str) -> tuple[dict | None, set]:
    import transst_bayes as tb

    if name in ("fit_em", "fit_svi"):
        opts = data_options(getattr(tb, name))
        return opts, set(opts)
    if name == "tl.transst":
        return tl_transst_options()
    return None, set()


# --- the public API -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(API))
def test_public_docstring_follows_numpydoc_and_the_signature(name):
    passed_on, complete = _options_for(name)
    problems = check(API[name], passed_on, complete)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def test_the_list_covers_the_public_api():
    import transst_bayes as tb

    assert {"fit_em", "fit_svi", "tl.transst", "tl.markers", "tl.transfer_breaking_genes", "simulate",
            "TransSTResult", "load_result", "TransSTResult.to_anndata", "TransSTResult.save",
            "TransSTResult.load", "TransSTResult.from_anndata"} <= set(API)
    assert {f"pp.{n}" for n in ("log_normalize", "select_genes", "spatial_neighbors")} <= set(API)
    assert {f"pl.{n}" for n in tb.pl.__all__} <= set(API) and len(tb.pl.__all__) >= 5


def test_the_data_options_are_the_ones_the_fits_accept():
    """The names checked against are the ones `job.data_settings` lets through."""
    import transst_bayes as tb
    from transst_bayes.job import data_settings

    opts = data_options(tb.fit_em)
    assert {"layer", "genes", "n_genes", "standardize", "spatial_key", "n_neighbors",
            "source_batch_key", "prepare_on"} <= set(opts) and "dtype" not in opts
    data_settings({k: v[0] for k, v in opts.items()})  # every one accepted
    with pytest.raises(TypeError, match="data options"):
        data_settings({"n_gene": 100})


def _attributes(obj) -> dict[str, str | None]:
    found, bad = entries(sections(inspect.getdoc(obj)).get("Attributes", []))
    assert not bad, bad
    return dict(found)


@pytest.mark.parametrize("name", ["EMSettings", "SVISettings"])
def test_settings_attributes_are_the_fields(name):
    import transst_bayes as tb

    cls = getattr(tb, name)
    assert is_dataclass(cls)
    documented = _attributes(cls)
    declared = {f.name: f.default for f in fields(cls)}
    assert set(documented) == set(declared), set(documented) ^ set(declared)
    for k, typ in documented.items():
        stated, value = documented_default(typ)
        if stated and declared[k] is not MISSING:
            assert _same(value, declared[k]), (k, value, declared[k])


def test_result_attributes_are_its_fields_and_properties():
    import transst_bayes as tb

    cls = tb.TransSTResult
    props = {n for n, v in vars(cls).items() if isinstance(v, property) and not n.startswith("_")}
    documented = set(_attributes(cls))
    assert documented == props, documented ^ props
    for n in props:
        assert (getattr(cls, n).__doc__ or "").strip(), f"property {n} has no docstring"


# --- the checker can fail -----------------------------------------------------------------------

def _made_up(doc: str):
    def f(adata, n_top: int = 5, *, key: str = "transst", **options):
        return adata
    f.__doc__ = doc
    return f


GOOD = '''Do something to `adata`.

    Parameters
    ----------
    adata : AnnData
        The data.
    n_top : int, default 5
        How many.
    key : str, default "transst"
        Name of the fit.
    **options
        Passed on.

    Other Parameters
    ----------------
    layer : str or None, default None
        A data option.

    Returns
    -------
    AnnData
        The data.

    Examples
    --------
    >>> f(adata)
    '''


def test_the_checker_passes_a_complete_docstring():
    assert check(_made_up(GOOD), {"layer": [None]}, {"layer"}) == []


def test_the_checker_rejects_a_missing_parameter():
    doc = GOOD.replace("    n_top : int, default 5\n        How many.\n", "")
    problems = check(_made_up(doc), {"layer": [None]})
    assert problems == ["Parameters: n_top is not documented"]


def test_the_checker_rejects_an_entry_for_no_parameter_and_a_crammed_entry():
    doc = GOOD.replace("    key : str,", "    n_domains : int\n        K.\n    key : str,")
    problems = check(_made_up(doc), {"layer": [None]})
    assert "Parameters: n_domains is not a parameter of the signature" in problems
    starless = GOOD.replace("    **options\n", "    options : dict\n")
    assert "Parameters: options is not a parameter of the signature (write **options)" in \
        check(_made_up(starless), {"layer": [None]})
    crammed = GOOD.replace('    key : str, default "transst"\n        Name of the fit.\n', "")
    crammed = crammed.replace("How many.", "How many. key : name of the fit.")
    assert "Parameters: key is not documented" in check(_made_up(crammed), {"layer": [None]})


def test_the_checker_rejects_unknown_options_missing_options_and_wrong_defaults():
    f = _made_up(GOOD.replace("    layer : str or None", "    layr : str or None"))
    problems = check(f, {"layer": [None]}, {"layer"})
    assert "Other Parameters: layr is not an accepted option" in problems
    assert "Other Parameters: the accepted option layer is not listed" in problems
    wrong = check(_made_up(GOOD.replace("int, default 5", "int, default 10")), {"layer": [None]})
    assert wrong == ["Parameters: n_top documents default 10, the signature has 5"]
    bare = GOOD.replace("    **options\n        Passed on.\n", "")
    bare = bare.replace("Other Parameters\n    ----------------\n    layer : str or None, default None\n"
                        "        A data option.\n", "")
    assert "Parameters: **options is not documented" in check(_made_up(bare))


def test_the_checker_rejects_missing_returns_and_examples():
    doc = GOOD.split("    Returns")[0]
    problems = check(_made_up(doc), {"layer": [None]})
    assert "no Returns section" in problems and "no Examples section" in problems
    no_prompt = GOOD.replace(">>> f(adata)", "f(adata)")
    assert check(_made_up(no_prompt), {"layer": [None]}) == ["Examples section without a `>>>` line"]
    assert check(_made_up(None)) == ["no docstring"]


def test_the_parser_reads_sections_and_entries():
    sec = sections(GOOD)
    assert list(sec) == ["", "Parameters", "Other Parameters", "Returns", "Examples"]
    found, bad = entries(sec["Parameters"])
    assert [n for n, _ in found] == ["adata", "n_top", "key", "**options"] and not bad
    assert documented_default('str, default "transst"') == (True, "transst")
    assert documented_default("int or None, default None") == (True, None)
    assert documented_default("str") == (False, None)
    assert entries(["a, b : int", "    both"])[0] == [("a", "int"), ("b", "int")]
    crammed, _ = entries(["n_factors : q. transfer : 'auto'"])  # two parameters in one entry
    assert [n for n, _ in crammed] == ["n_factors"]  # so `transfer` counts as undocumented
