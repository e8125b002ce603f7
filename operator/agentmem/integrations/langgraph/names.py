"""How LangGraph's names map onto agentmem addresses, reversibly.

agentmem's agent ids and keys allow letters, digits, ``.``, ``_``, ``-`` and
``:`` (keys also ``/``); LangGraph's namespace labels, store keys and thread
ids may hold anything. A label is encoded character by character: letters,
digits, ``.``, ``_`` and ``-`` stay as they are; every other character
becomes ``:`` followed by the two upper-case hex digits of each of its UTF-8
bytes (``/`` is ``:2F``, ``:`` is ``:3A``, ``é`` is ``:C3:A9``). The labels
``.`` and ``..`` are encoded as ``:2E`` and ``:2E:2E`` (a URL path would
drop them), and the empty label as ``:``. Decoding reverses it exactly.

A store item ``(namespace, key)`` lives at agent ``encode(namespace[0])``,
key ``store/`` + the other labels and the key, encoded and joined with
``/``: ``("user-1", "memories")``, ``"food"`` is agent ``user-1``, key
``store/memories/food``. A checkpointer thread ``t`` is agent
``thread.`` + ``encode(t)``.
"""

from __future__ import annotations

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
STORE_PREFIX = "store/"
THREAD_PREFIX = "thread."
MAX_AGENT = 128
MAX_KEY = 512


def encode(label: str) -> str:
    """One label in the key alphabet (reversible; see the module's description)."""
    if label == "":
        return ":"
    if label in (".", ".."):
        return ":2E" * len(label)
    out = []
    for ch in label:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f":{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode(text: str) -> str:
    """The label :func:`encode` made ``text`` from."""
    if text == ":":
        return ""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == ":":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode("ascii"))
            i += 1
    return raw.decode("utf-8")


def agent_of(namespace: tuple[str, ...]) -> str:
    if not namespace:
        raise ValueError("a namespace needs at least one label (it names the agent)")
    agent = encode(namespace[0])
    if len(agent) > MAX_AGENT:
        raise ValueError(
            f"namespace label {namespace[0]!r} is {len(agent)} characters once encoded; "
            f"an agent id holds at most {MAX_AGENT}"
        )
    return agent


def store_key(namespace: tuple[str, ...], key: str) -> str:
    path = STORE_PREFIX + "/".join([*(encode(n) for n in namespace[1:]), encode(key)])
    if len(path) > MAX_KEY:
        raise ValueError(
            f"namespace {namespace!r} and key {key!r} make a key of {len(path)} characters "
            f"once encoded; agentmem keys hold at most {MAX_KEY}"
        )
    return path


def parse_store_key(agent: str, path: str) -> tuple[tuple[str, ...], str] | None:
    """(namespace, key) of a store item's agent and key; None for other keys."""
    if not path.startswith(STORE_PREFIX):
        return None
    labels = [decode(p) for p in path[len(STORE_PREFIX) :].split("/")]
    return (decode(agent), *labels[:-1]), labels[-1]


def thread_agent(thread_id: str) -> str:
    agent = THREAD_PREFIX + encode(thread_id)
    if len(agent) > MAX_AGENT:
        raise ValueError(f"thread id {thread_id!r} is too long once encoded ({len(agent)} > 128)")
    return agent


def thread_of(agent: str) -> str | None:
    return decode(agent[len(THREAD_PREFIX) :]) if agent.startswith(THREAD_PREFIX) else None
