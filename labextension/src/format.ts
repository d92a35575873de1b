// How the panel writes sizes and durations: the same units the CLI and the cell's view use
// (binary prefixes, "41 min", "3 h 5 min").

/** 1536 -> "1.5 KiB"; null -> "?". */
export function bytes(value: number | null): string {
  if (value === null || value === undefined) {
    return '?';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  const digits = unit === 0 || size >= 100 ? 0 : size >= 10 ? 1 : 2;
  return `${Number(size.toFixed(digits))} ${units[unit]}`;
}

/** 0.24 -> "0.2 s"; 75 -> "1 min 15 s"; 7500 -> "2 h 5 min"; null -> "". */
export function duration(seconds: number | null): string {
  if (seconds === null || seconds === undefined || seconds < 0) {
    return '';
  }
  if (seconds < 10) {
    return `${Number(seconds.toFixed(1))} s`;
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    const rest = s % 60;
    return `${Math.floor(s / 60)} min` + (rest ? ` ${rest} s` : '');
  }
  if (s < 86400) {
    const rest = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h` + (rest ? ` ${rest} min` : '');
  }
  const rest = Math.floor((s % 86400) / 3600);
  return `${Math.floor(s / 86400)} d` + (rest ? ` ${rest} h` : '');
}

/** An ISO time as the reader's local date and time, or "" when unknown. */
export function when(iso: string | null): string {
  const date = iso ? new Date(iso) : null;
  return date && !isNaN(date.getTime())
    ? date.toLocaleString([], { hour12: false })
    : '';
}

/** {"running": 3, "pending": 1} -> "3 running, 1 pending" ("no jobs running" if none). */
export function countsText(counts: { [state: string]: number }): string {
  const parts = ['running', 'pending']
    .filter(state => (counts[state] || 0) > 0)
    .map(state => `${counts[state]} ${state}`);
  return parts.length ? parts.join(', ') : 'nothing running';
}
