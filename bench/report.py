"""The terminal table: one row per figure, one column per server, and chatd / IRC."""


def ratio(chatd_value, irc_value):
    numbers = (int, float)
    if (isinstance(chatd_value, numbers) and isinstance(irc_value, numbers)
            and not isinstance(chatd_value, bool) and irc_value):
        return f"{chatd_value / irc_value:.2f}"
    return ""


def print_table(description, parameters, figures):
    """Print one scenario's figures side by side; the ratio is the first chatd over IRC."""
    servers = list(figures)
    chatd = next((name for name in servers if name.startswith("chatd")), None)
    irc = next((name for name in servers if not name.startswith("chatd")), None)
    rows = []
    for server in servers:
        for key, value in figures[server].items():
            if key not in rows and not isinstance(value, dict) and key != "profile":
                rows.append(key)
    header = ["", *servers] + ([f"{chatd}/{irc}"] if chatd and irc else [])
    table = [header]
    for key in rows:
        values = [figures[server].get(key, "") for server in servers]
        line = [key, *(format_value(v) for v in values)]
        if chatd and irc:
            line.append(ratio(figures[chatd].get(key), figures[irc].get(key)))
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
        own = figures[server].get("profile_own_pct")
        if own:
            print(f"  {server} reactor thread profile, % of samples in the function itself:")
            for frame, percent in own.items():
                print(f"    {percent:5.1f}  {frame}")


def format_value(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
