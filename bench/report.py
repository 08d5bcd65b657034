"""The terminal table: one row per figure, one column per server, and chatd / IRC."""

# What a run's figures say about deliveries that did not arrive, in the order printed.
LOSS_EXPLANATIONS = ("receivers_short", "first_short", "clients_closed_by_server",
                     "close_reasons", "first_closed", "slow_readers_dropped",
                     "first_slow_reader_drop", "presence_lapses", "first_presence_lapse",
                     "setup_failures", "first_setup_failure", "server_errors",
                     "first_server_error", "server_crashed")


def ratio(chatd_value, irc_value):
    """chatd / IRC rounded to 2 decimals, or None unless both are numbers (IRC's not 0)."""
    numbers = (int, float)
    if (isinstance(chatd_value, numbers) and isinstance(irc_value, numbers)
            and not isinstance(chatd_value, bool) and not isinstance(irc_value, bool)
            and irc_value):
        return round(chatd_value / irc_value, 2)
    return None


def irc_server(figures):
    return next((name for name in figures if not name.startswith("chatd")), None)


def ratios(figures):
    """{"chatd-sqlite/ngircd": {figure: chatd / IRC}} for every chatd server and every
    number it shares with the IRC server; empty without an IRC server."""
    irc = irc_server(figures)
    if irc is None:
        return {}
    result = {}
    for server, values in figures.items():
        if server.startswith("chatd"):
            shared = {key: ratio(value, figures[irc].get(key)) for key, value in values.items()}
            result[f"{server}/{irc}"] = {k: v for k, v in shared.items() if v is not None}
    return result


def print_table(description, parameters, figures):
    """Print one scenario's figures side by side; the ratio is the first chatd over IRC."""
    servers = list(figures)
    chatd = next((name for name in servers if name.startswith("chatd")), None)
    irc = irc_server(figures)
    first_ratios = ratios(figures).get(f"{chatd}/{irc}", {})
    rows = []
    for server in servers:
        # A figure only some servers have goes after the one it follows in theirs
        # (a cluster's NATS CPU after its server CPU), not at the end of the table.
        previous = None
        for key, value in figures[server].items():
            if isinstance(value, dict) or key == "profile":
                continue
            if key not in rows:
                rows.insert(0 if previous is None else rows.index(previous) + 1, key)
            previous = key
    header = ["", *servers] + ([f"{chatd}/{irc}"] if chatd and irc else [])
    table = [header]
    for key in rows:
        values = [figures[server].get(key, "") for server in servers]
        line = [key, *(format_value(v) for v in values)]
        if chatd and irc:
            line.append(format_value(first_ratios.get(key, "")))
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"\n{description}")
    print("  " + ", ".join(f"{k}={v}" for k, v in parameters.items()))
    for index, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        print("  " + "  ".join(cells))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for server in servers:
        for line in losses(figures[server]):
            print(f"  ! {server}: {line}")
    for server in servers:
        for key, title in (("profile_parts_pct", "what it does"),
                           ("profile_own_pct", "in the function itself")):
            shares = figures[server].get(key)
            if shares:
                print(f"  {server} reactor thread profile, % of samples {title}:")
                for frame, percent in shares.items():
                    print(f"    {percent:5.1f}  {frame}")


def losses(values):
    """One line per phase whose deliveries fell short, then what the run saw that explains it."""
    lines = []
    for key, expected in values.items():
        if key.endswith("deliveries_expected"):
            delivered = values.get(key.replace("_expected", ""))
            if isinstance(delivered, int) and delivered < expected:
                phase = key[:-len("deliveries_expected")].rstrip("_") or "run"
                lines.append(f"{phase}: {expected - delivered:,} of {expected:,} "
                             f"deliveries missing")
    if lines:
        for key, value in values.items():
            if value and any(key.endswith(name) for name in LOSS_EXPLANATIONS):
                lines.append(f"  {key}: {value}")
    return lines


def format_value(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
