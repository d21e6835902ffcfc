"""Rules for our Kestra flows that Kestra 2.0's validator does not check (it accepts each of
the mistakes below and fails, or worse succeeds, only when the flow runs). Each rule takes a
parsed flow and returns its problems as sentences; an empty list is a pass."""

from __future__ import annotations

import re
from collections.abc import Iterator

import jinja2
from jinja2 import nodes

from taxi_assets.datasets import DATASETS_BY_SOURCE, MIRROR
from taxi_assets.months import Month, months_between

SCHEDULE = "io.kestra.plugin.core.trigger.Schedule"
SUBFLOW = "io.kestra.plugin.core.flow.Subflow"
FLOW_TRIGGER = "io.kestra.plugin.core.trigger.Flow"
IF = "io.kestra.plugin.core.flow.If"
# Where a task holds other tasks (flowable tasks, and every task's error handlers).
CHILD_LISTS = ("tasks", "then", "else", "errors", "finally", "default")
# The variables a task's expressions start from: Kestra 2.0's RunVariables.EXECUTION_CONTEXT_PATHS,
# and script tasks' workingDir and outputDir. The functions: Kestra 2.0's own
# (io.kestra.core.runners.pebble.functions) and Pebble's. Anything else is a typo.
ROOTS = {"envs", "files", "globals", "inputs", "labels", "outputs", "tasks", "vars", "execution", "flow",
         "kestra", "parent", "parents", "task", "taskrun", "trigger", "workingDir", "outputDir"}  # fmt: skip
FUNCTIONS = {"dayOfMonth", "dayOfWeek", "decrypt", "encrypt", "env", "errorLogs", "fetchContext", "fileExists",
             "fileSize", "fileURI", "fromIon", "fromJson", "hourOfDay", "http", "id", "isDayWeekInMonth",
             "isFileEmpty", "isLastWorkingDay", "isPublicHoliday", "isWeekend", "ksuid", "kv", "loopOutputs",
             "monthOfYear", "nanoId", "now", "randomInt", "randomPort", "read", "render", "renderOnce", "secret",
             "subflow", "tasksWithState", "uuid", "yaml", "max", "min", "range"}  # fmt: skip
EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)

# jinja2's parser stands in for Pebble's: for the expressions our flows use (attribute access,
# filters, function calls, `not`, `==`, string literals) the two grammars agree. Pebble's `??`
# and `???` become Jinja's `or`, a binary operator too; any other Pebble-only syntax
# (`a ? b : c`, `contains`) reads as a parse error here: map it as well when a flow needs it.
COALESCE = re.compile(r"\?\?\??")
_JINJA = jinja2.Environment()


def flows_by_key(flows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(flow["namespace"], flow["id"]): flow for flow in flows}


def tasks_in_order(items: list[dict]) -> Iterator[dict]:
    """Every task, depth first in document order: a flowable task before those it holds."""
    for task in items or []:
        yield task
        for key in CHILD_LISTS:
            yield from tasks_in_order(task.get(key) or [])
        for branch in (task.get("cases") or {}).values():  # Switch
            yield from tasks_in_order(branch)


def all_tasks(flow: dict) -> list[dict]:
    return [
        *tasks_in_order(flow.get("tasks")),
        *tasks_in_order(flow.get("errors")),
        *tasks_in_order(flow.get("finally")),
    ]


# -- 1. Inputs given by a Schedule trigger or a Subflow task --------------------------------------


def _check_inputs(given: dict, declared: list[dict], where: str, target: str) -> list[str]:
    problems = []
    by_id = {i["id"]: i for i in declared or []}
    for name, value in (given or {}).items():
        spec = by_id.get(name)
        if spec is None:
            problems.append(f"{where} gives input {name!r}, which {target} does not declare (it has {sorted(by_id)})")
        elif not (isinstance(value, str) and "{{" in value):  # a literal: Kestra checks it only at run time
            problems += [f"{where} gives {name}={value!r}: {why}" for why in _invalid(spec, value)]
    for name, spec in by_id.items():
        if spec.get("required", True) and "defaults" not in spec and name not in (given or {}):
            problems.append(f"{where} does not give {target}'s required input {name!r}, which has no default")
    return problems


def _invalid(spec: dict, value) -> list[str]:
    """Why a literal value is not valid for an input (Kestra 2.0's SelectInput and StringInput)."""
    if spec["type"] == "SELECT" and not spec.get("allowCustomValue") and spec.get("values") is not None:
        values = [v["value"] if isinstance(v, dict) else v for v in spec["values"]]
        if value not in values:
            return [f"not one of {values}"]
    if spec["type"] == "STRING" and spec.get("validator") and not re.fullmatch(spec["validator"], str(value)):
        return [f"does not match {spec['validator']!r}"]
    return []


def input_rule(flow: dict, flows: dict[tuple[str, str], dict]) -> list[str]:
    """A Schedule or Flow trigger's inputs are the flow's own; a Subflow's are its target flow's."""
    problems = []
    for trigger in flow.get("triggers") or []:
        if trigger["type"] in (SCHEDULE, FLOW_TRIGGER):
            problems += _check_inputs(trigger.get("inputs"), flow.get("inputs"), f"trigger {trigger['id']}", flow["id"])
    for task in all_tasks(flow):
        if task["type"] == SUBFLOW:
            target = flows.get((task["namespace"], task["flowId"]))
            if target is None:
                problems.append(
                    f"task {task['id']} calls {task['namespace']}.{task['flowId']}, which is no flow of ours"
                )
            else:
                problems += _check_inputs(task.get("inputs"), target.get("inputs"), f"task {task['id']}", target["id"])
    return problems


# -- 2. Pebble expressions ------------------------------------------------------------------------


def _strings(node, owner: str, in_tasks: bool) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if in_tasks and "id" in node and "type" in node:
            owner = node["id"]
        for key, value in node.items():
            if key != "description":  # documentation, never rendered
                yield from _strings(value, owner, in_tasks)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value, owner, in_tasks)
    elif isinstance(node, str):
        yield owner, node


def flow_strings(flow: dict) -> Iterator[tuple[str, str]]:
    """(owner, text) of every string of a flow: owner is the innermost task's id, else the
    flow-level key (`outputs`, `triggers`, ...) the string sits under."""
    for key, value in flow.items():
        if key != "description":
            yield from _strings(value, key, in_tasks=key in ("tasks", "errors", "finally"))


def parse(text: str) -> nodes.Template:
    """`text` as Pebble reads it; jinja2.TemplateSyntaxError when it does not parse."""
    if text.count("{{") != text.count("}}"):
        raise jinja2.TemplateSyntaxError(f"unbalanced braces in {text!r}", 1)
    return _JINJA.parse(EXPRESSION.sub(lambda m: "{{" + COALESCE.sub(" or ", m.group(1)) + "}}", text))


def _path(node) -> list[str] | None:
    """`a.b['c'].d` as [a, b, c, d]; None when not a plain path."""
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        head = _path(node.node)
        return head and [*head, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        head = _path(node.node)
        return head and [*head, str(node.arg.value)]
    return None


def references(template: nodes.Template) -> Iterator[list[str]]:
    """The longest variable paths of an expression (`outputs.t.vars.k`, not also `outputs.t`)."""
    inner = set()
    for node in template.find_all((nodes.Getattr, nodes.Getitem)):
        inner.add(id(node.node))
    for node in template.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        if id(node) not in inner and not (isinstance(node, nodes.Name) and node.ctx != "load"):
            path = _path(node)
            if path:
                yield path


def functions(template: nodes.Template) -> Iterator[tuple[str, list]]:
    """(name, literal arguments) of every function call."""
    for call in template.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name):
            yield call.node.name, [a.value for a in call.args if isinstance(a, nodes.Const)]


def expression_rule(flow: dict) -> list[str]:
    """Every expression parses, and names only this flow's inputs, and outputs of tasks that
    exist and run before the expression's own task (any task, in the flow's `outputs`).
    Whether a script task's `vars.K` is one its step prints is left to the engine tests, which
    run every flow. A Flow trigger's expressions are rendered with the execution that ended as
    theirs: flow_trigger_rule checks them."""
    problems = []
    inputs = {i["id"] for i in flow.get("inputs") or []}
    tasks = {t["id"]: t for t in all_tasks(flow)}
    own = {**flow, "triggers": [t for t in flow.get("triggers") or [] if t["type"] != FLOW_TRIGGER]}
    for owner, text in flow_strings(own):
        problems += _check_text(
            owner, text, inputs, flow["id"], lambda path, o=owner, t=text: _check_output(o, t, path, tasks)
        )
    return problems


def _check_text(owner: str, text: str, inputs: set[str], whose: str, check_outputs) -> list[str]:
    """An expression parses, calls Kestra's functions, names Kestra's variables, `inputs.X` of
    `whose` inputs, and outputs as `check_outputs(path)` judges them."""
    if "{{" not in text and "}}" not in text:
        return []
    try:
        template = parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{owner}: {text!r} does not parse: {exc.message}"]
    problems, called = [], set()
    for name, _ in functions(template):
        called.add(name)
        if name not in FUNCTIONS:
            problems.append(f"{owner}: {text!r} calls {name}(), which is no Kestra function")
    for path in references(template):
        root = path[0]
        if root in called:
            continue
        if root not in ROOTS:
            problems.append(f"{owner}: {text!r} names {root}, which is not a Kestra variable")
        elif root == "inputs" and (len(path) < 2 or path[1] not in inputs):
            problems.append(f"{owner}: {text!r} names {'.'.join(path[:2])}, which {whose} does not declare")
        elif root == "outputs":
            problems += check_outputs(path)
    return problems


def _check_output(owner: str, text: str, path: list[str], tasks: dict[str, dict]) -> list[str]:
    order = list(tasks)  # document order: a flowable task before those it holds
    if len(path) < 2 or path[1] not in tasks:
        return [f"{owner}: {text!r} names {'.'.join(path[:2])}, which is no task of this flow"]
    if owner == "triggers":
        return [f"{owner}: {text!r} reads a task's outputs, which a trigger never has"]
    if owner in tasks and order.index(path[1]) >= order.index(owner):
        return [f"{owner}: {text!r} reads {path[1]}'s outputs, but {path[1]} does not run before {owner}"]
    if path[2:3] == ["vars"] and "commands" not in tasks[path[1]] and "script" not in tasks[path[1]]:
        return [f"{owner}: {text!r} reads {path[1]}'s vars, which only a script task prints"]
    return []


# -- 3. If conditions -------------------------------------------------------------------------------


def if_rule(flow: dict) -> list[str]:
    """An If's condition is one expression: Kestra renders it and takes any text other than
    `false`, `0`, `-0` or empty as true (If.java, TruthUtils), so plain text always runs `then`."""
    problems = []
    for task in all_tasks(flow):
        if task["type"] == IF:
            condition = task.get("condition")
            whole = isinstance(condition, str) and re.fullmatch(r"\s*\{\{((?!\}\}).)*\}\}\s*", condition, re.S)
            if not whole:
                problems.append(f"task {task['id']}: condition {condition!r} is not one {{{{ expression }}}}")
    return problems


# -- 4. Secrets ---------------------------------------------------------------------------------------


def secret_names(flow: dict) -> set[str]:
    names = set()
    for _, text in flow_strings(flow):
        try:
            calls = list(functions(parse(text))) if "secret" in text else []
        except jinja2.TemplateSyntaxError:
            continue  # the expression rule reports it
        names |= {args[0] for name, args in calls if name == "secret" and args}
    return names


def secret_rule(flow: dict, documented: set[str]) -> list[str]:
    """Every secret a flow reads is a variable of the one `.env` (.env.example documents it)."""
    return [f"secret {name} is not in .env.example" for name in sorted(secret_names(flow) - documented)]


# -- 5. Inputs say what they are ----------------------------------------------------------------------


def description_rule(flow: dict) -> list[str]:
    """Every input has a description: Kestra shows it beside the field of the Execute form, and
    a trigger's or a caller's author reads it in the flow. Kestra accepts an input without one."""
    return [
        f"input {spec['id']} has no description"
        for spec in flow.get("inputs") or []
        if not str(spec.get("description") or "").strip()
    ]


# -- 6. Taxi and month inputs offer what the project publishes ----------------------------------------

# An open-ended source (last_month None: the TLC's) publishes a month every month; its validator
# is checked to accept every month from the first up to this one.
OPEN_ENDED_UNTIL = Month(2099, 12)


def flow_source(flow: dict) -> str:
    """The source a flow loads from: its `source` label (tlc), else the mirror."""
    return (flow.get("labels") or {}).get("source", MIRROR.name)


def flow_sources(flow: dict) -> list[str]:
    """The sources a flow works on: a `source` SELECT input's values, else its one source."""
    for spec in flow.get("inputs") or []:
        if spec["id"] == "source" and spec["type"] == "SELECT":
            return [v["value"] if isinstance(v, dict) else v for v in spec.get("values") or []]
    return [flow_source(flow)]


def _datasets(flow: dict) -> list:
    """The feeds of every source the flow works on (flow_sources)."""
    return [d for source in flow_sources(flow) for d in DATASETS_BY_SOURCE[source].values()]


def published_span(flow: dict) -> tuple[Month, Month | None]:
    """The first and last month the project publishes for any feed of the flow's sources
    (taxi_assets.datasets: each feed's first_month and last_month); last None: open-ended."""
    datasets = _datasets(flow)
    lasts = [d.last_month for d in datasets]
    return min(d.first_month for d in datasets), None if None in lasts else max(lasts)


def malformed(month: Month) -> list[str]:
    """Texts near a valid month that are no YYYY-MM month."""
    key = str(month)
    return [f"{month.year}-13", f"{month.year}-00", f"{month.year}-{month.month}", key[2:], key.replace("-", "/"),
            f" {key}", f"{key} ", f"{key}\n", f"{key}-01", ""]  # fmt: skip


def matches(validator: str, value: str) -> bool:
    """As Kestra 2.0 matches a STRING input (StringInput.validate: RegexUtils.matches, i.e.
    Pattern.compile(validator).matcher(value).matches(), a whole-value match): Python's
    re.fullmatch. For our patterns (anchors, groups, alternation, character classes, no flags,
    no lookaround, no possessive or Unicode classes) Java's and Python's regex read alike;
    tests/test_kestra_engine.py feeds the bounds to Kestra's own validator as well."""
    return re.fullmatch(validator, value) is not None


def published_rule(flow: dict) -> list[str]:
    """A `taxi` SELECT offers exactly the source's feeds, a `source` SELECT only our sources; a
    `month` STRING's validator accepts exactly the months published for the flow's sources (its
    `source` SELECT's, else its own: every month of the span, not the month before
    it nor, when the span ends, the month after, nor a malformed one), and its description names
    each feed's first and last month. Kestra checks none of it: a validator one month too wide
    starts a load that 404s, one too narrow refuses a month Dagster loads."""
    problems = []
    unknown = sorted(set(flow_sources(flow)) - set(DATASETS_BY_SOURCE))
    if unknown:
        return [f"input source offers {unknown}, which are no sources (they are {sorted(DATASETS_BY_SOURCE)})"]
    datasets = DATASETS_BY_SOURCE[flow_source(flow)]
    first, last = published_span(flow)
    for spec in flow.get("inputs") or []:
        if spec["id"] == "taxi" and spec["type"] == "SELECT":
            values = [v["value"] if isinstance(v, dict) else v for v in spec.get("values") or []]
            if sorted(values) != sorted(datasets):
                problems.append(f"input taxi offers {values}, the {flow_source(flow)} feeds are {sorted(datasets)}")
        if spec["id"] != "month":
            continue
        validator = spec.get("validator")
        if spec["type"] != "STRING" or not validator:
            problems.append("input month is no STRING with a validator")
            continue
        span = f"{first}..{last or 'open'}"
        refused = [str(m) for m in months_between(first, last or OPEN_ENDED_UNTIL) if not matches(validator, str(m))]
        if refused:
            problems.append(f"month validator refuses {', '.join(refused[:5])}, published ({span})")
        outside = [str(m) for m in (first.previous(), last and last.next()) if m is not None]
        wrong = [repr(v) for v in [*outside, *malformed(first)] if matches(validator, v)]
        if wrong:
            problems.append(f"month validator accepts {', '.join(wrong)}, outside the published months ({span})")
        bounds = {str(d.first_month) for d in _datasets(flow)} | {
            str(d.last_month) for d in _datasets(flow) if d.last_month
        }
        for bound in sorted(bounds):
            if bound not in (spec.get("description") or ""):
                problems.append(f"input month's description does not name {bound}, a first or last published month")
    return problems


# -- 7. Flow triggers: what the load that ended starts -------------------------------------------------

# The stores a flow loads, by the step that loads each (a marts build reads the store's loaded rows).
LOAD_STEPS = {"postgres": "load-postgres", "bigquery": "load-bigquery"}


def _loads(flow: dict) -> set[str]:
    commands = " ".join(c for task in all_tasks(flow) for c in task.get("commands") or [])
    return {store for store, step in LOAD_STEPS.items() if f"taxi_assets {step} " in commands}


def flow_trigger_rule(flow: dict, flows: dict[tuple[str, str], dict]) -> list[str]:
    """A Flow trigger depends on flows of ours, each in stated states (without `states` a
    dependency matches any end, a failed load included: Kestra's default). Its inputs are rendered
    with the execution that ended as the context (Kestra 2.0's FlowTriggerService: `inputs.X` is
    that execution's input, `trigger.outputs.X` its flow's output), so they name what every flow it
    depends on declares; a literal `source` is the one that flow loads from, a literal `store` one
    it loads."""
    problems = []
    for trigger in flow.get("triggers") or []:
        if trigger["type"] != FLOW_TRIGGER:
            continue
        where = f"trigger {trigger['id']}"
        upstream = []
        for dependency in trigger.get("dependsOn") or []:
            key = (dependency.get("namespace"), dependency.get("flowId"))
            if key not in flows:
                problems.append(f"{where} depends on {'.'.join(map(str, key))}, which is no flow of ours")
                continue
            upstream.append(flows[key])
            if not dependency.get("states"):
                problems.append(
                    f"{where}: its dependency on {key[1]} lists no states, so any end (FAILED too) starts it"
                )
        if not trigger.get("dependsOn"):
            problems.append(f"{where} depends on no flow")
        given = trigger.get("inputs") or {}
        for name, value in given.items():
            if not isinstance(value, str) or "{{" not in value:
                for u in upstream:
                    if name == "source" and flow_source(u) != value:
                        problems.append(f"{where} gives source={value!r}, but {u['id']} loads from {flow_source(u)}")
                    if name == "store" and value not in _loads(u):
                        problems.append(f"{where} gives store={value!r}, which {u['id']} does not load")
                continue
            for u in upstream:
                inputs = {i["id"] for i in u.get("inputs") or []}
                outputs = {o["id"] for o in u.get("outputs") or []}
                found = _check_text(where, value, inputs, f"{u['id']} (the execution that ended)", lambda path: [])
                problems += found
                if found:
                    continue
                for path in references(parse(value)):
                    if path[:2] == ["trigger", "outputs"] and (len(path) < 3 or path[2] not in outputs):
                        problems.append(
                            f"{where}: {value!r} names trigger.outputs.{'.'.join(path[2:3])}, which {u['id']} does not declare"
                        )
    return problems
