"""The software release as one integer, for the heartbeat (health key 19, ``sw_version``).

Kept out of ``codes``, which every board imports: a board's heap budget has no room for code it
never runs (the board's heartbeat does not carry it; the Pi gateway's does).
"""


def version_code(text):
    """``"1.4.2"`` -> 1004002 (major * 10**6 + minor * 10**3 + patch), for health key 19.

    The heartbeat carries integers only; the full version string travels in the birth. Parts
    after the third, and anything that is not a leading number (``"2rc1"`` -> 2), are dropped;
    a version with no leading number at all gives 0 (unknown).
    """
    code = 0
    parts = str(text).split("+")[0].split(".")
    while len(parts) < 3:
        parts.append("0")
    for i, part in enumerate(parts[:3]):
        digits = ""
        for ch in part:
            if ch < "0" or ch > "9":
                break
            digits += ch
        if not digits:
            return 0 if i == 0 else code * 1000 ** (3 - i)
        code = code * 1000 + min(int(digits), 999)
    return code


def version_text(code):
    """1004002 -> ``"1.4.2"``: the inverse of version_code() for the parts it keeps."""
    return f"{code // 1000000}.{code // 1000 % 1000}.{code % 1000}"
