// The "Jobs" sidebar: every job of the identity, newest first, live from the JobFeed.
// Plain DOM, keyed by job id: a row is updated in place when its job changes, so a reader's
// scroll position and focus survive the once-a-second updates of running jobs.
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { errorText, FINAL_STATES, IIdentity, IJobRow, requestAPI } from './api';
import { JobFeed } from './feed';
import { bytes, countsText, duration, when } from './format';

/** What the panel needs from the rest of the extension. */
export interface IPanelActions {
  openJob(id: number, label: string | null): void;
  /** The user stopped these jobs here: their ends need no notification. */
  stoppedHere(ids: number[]): void;
  openSettings(): void;
  askDesktopPermission(): void;
}

// The state filter's choices: a name, and which states it keeps.
const FILTERS: { [name: string]: (state: string) => boolean } = {
  'all states': () => true,
  active: state => state === 'running' || state === 'pending' || state === 'created',
  running: state => state === 'running',
  pending: state => state === 'pending' || state === 'created',
  ended: state => FINAL_STATES.has(state),
  'exited (ok)': state => state === 'exited',
  'failed, killed or timed out': state =>
    state === 'failed' || state === 'oom-killed' || state === 'timed-out',
  stopped: state => state === 'stopped'
};

const PAGE = 200; // rows shown at first; "show more" adds as many again

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A row's elements, kept to update it in place. */
interface IRowNodes {
  root: HTMLLIElement;
  label: HTMLElement;
  state: HTMLElement;
  time: HTMLElement;
  command: HTMLElement;
  usage: HTMLElement;
  reason: HTMLElement;
  stop: HTMLButtonElement;
  rerun: HTMLButtonElement;
  remove: HTMLButtonElement;
  key: string;
}

export class JobsPanel extends Widget {
  constructor(
    private _feed: JobFeed,
    private _actions: IPanelActions
  ) {
    super();
    this.id = 'jobber-lab-jobs';
    this.addClass('jobber-lab-panel');
    this.title.caption = 'jobber: your jobs';

    const head = element('div', 'jobber-lab-head');
    head.append(element('h2', 'jobber-lab-title', 'Jobs'), this._summary);
    this._identityLine.className = 'jobber-lab-identity';
    this._message.className = 'jobber-lab-message';
    this._desktop.className = 'jobber-lab-desktop';

    const filters = this._filters;
    for (const name of Object.keys(FILTERS)) {
      this._stateFilter.append(new Option(name, name));
    }
    this._stateFilter.title = 'Show the jobs in these states';
    this._stateFilter.className = 'jp-mod-styled';
    this._labelFilter.type = 'search';
    this._labelFilter.placeholder = 'label';
    this._labelFilter.title = 'Show the jobs whose label contains this';
    this._labelFilter.className = 'jp-mod-styled';
    const labels = element('datalist');
    labels.id = 'jobber-lab-labels';
    this._labels = labels;
    this._labelFilter.setAttribute('list', labels.id);
    filters.append(this._stateFilter, this._labelFilter, labels);
    this._stateFilter.addEventListener('change', () => this._render());
    this._labelFilter.addEventListener('input', () => this._render());

    this._list.className = 'jobber-lab-list';
    this._more.className = 'jobber-lab-button jobber-lab-more';
    this._more.addEventListener('click', () => {
      this._shown += PAGE;
      this._render();
    });
    this._empty.className = 'jobber-lab-empty';
    this._sweeps.className = 'jobber-lab-sweeps';

    this.node.append(
      head,
      this._identityLine,
      this._message,
      this._desktop,
      filters,
      this._sweeps,
      this._empty,
      this._list,
      this._more
    );
    this._feed.changed.connect(this._render, this);
    this._render();
    // A running job's elapsed time ticks between its events.
    this._timer = window.setInterval(() => this._tick(), 1000);
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  /** The identity the server acts as, or why there is none. */
  setIdentity(identity: IIdentity | null, problem: string | null = null): void {
    this._identity = identity;
    this._identityProblem = problem;
    this._render();
  }

  /** Whether desktop notifications are wanted but the browser has not allowed them. */
  setDesktopWanted(wanted: boolean): void {
    this._desktopWanted = wanted;
    this._render();
  }

  private _render(): void {
    this._renderMessage();
    const jobs = this._feed.jobs;
    this._summary.textContent = this._feed.connected
      ? `${countsText(this._feed.counts)} · ${jobs.length} job${jobs.length === 1 ? '' : 's'}`
      : '';
    this._renderLabels(jobs);
    this._renderSweeps(jobs);

    const keep = FILTERS[this._stateFilter.value] || FILTERS['all states'];
    const label = this._labelFilter.value.trim().toLowerCase();
    const matching = jobs.filter(
      job =>
        keep(job.state) &&
        (!label || (job.label || '').toLowerCase().includes(label))
    );
    const shown = matching.slice(0, this._shown);
    const seen = new Set<number>();
    let previous: Element | null = null;
    for (const job of shown) {
      seen.add(job.id);
      const row = this._row(job);
      // Move a row only when it is out of place: moving nodes the reader looks at
      // would reset hover and focus.
      const expected: Element | null = previous
        ? previous.nextElementSibling
        : this._list.firstElementChild;
      if (expected !== row.root) {
        if (previous) {
          previous.after(row.root);
        } else {
          this._list.prepend(row.root);
        }
      }
      previous = row.root;
    }
    for (const [id, row] of this._rows) {
      if (!seen.has(id)) {
        row.root.remove();
        if (!this._feed.job(id)) {
          this._rows.delete(id);
        }
      }
    }
    this._more.hidden = matching.length <= shown.length;
    this._more.textContent = `Show ${Math.min(PAGE, matching.length - shown.length)} more (of ${matching.length})`;
    this._empty.hidden = !this._feed.connected || shown.length > 0;
    this._empty.textContent = jobs.length
      ? 'No job matches these filters.'
      : 'No jobs yet. Start one from a notebook (%%jobber_run) or a terminal (jobber run -- CMD): it appears here within a second.';
  }

  private _renderMessage(): void {
    const identity = this._identity;
    const node = this._message;
    node.textContent = '';
    node.hidden = false;
    node.classList.remove('jobber-lab-warning');
    if (this._identityProblem) {
      node.classList.add('jobber-lab-warning');
      node.append(element('p', 'jobber-lab-problem', this._identityProblem));
      const open = element('button', 'jobber-lab-button', 'Open jobber settings');
      open.addEventListener('click', () => this._actions.openSettings());
      node.append(open);
    } else if (identity && !identity.configured) {
      node.classList.add('jobber-lab-warning');
      const text = element('p');
      text.append(
        'No jobber identity is configured for this Jupyter server. Set ',
        element('b', '', 'Certificate path'),
        ' in Settings → Settings Editor → jobber (the absolute path of your client certificate, e.g. ',
        element('code', '', '/home/you/.jobber/client.pem'),
        '), or start JupyterLab with ',
        element('code', '', 'JOBBER_CERT=/path/to/client.pem'),
        '. For a remote jobber server, also set its URL (',
        element('b', '', 'Server'),
        ').'
      );
      node.append(text);
      // Something was set (a certPath, $JOBBER_CERT) and failed: the server says what.
      if (identity.problem && identity.source) {
        node.append(element('p', 'jobber-lab-problem', identity.problem));
      }
      const open = element('button', 'jobber-lab-button', 'Open jobber settings');
      open.addEventListener('click', () => this._actions.openSettings());
      node.append(open);
    } else if (identity && !this._feed.connected) {
      node.textContent = 'Connecting to the Jupyter server…';
    } else {
      node.hidden = true;
    }
    this._identityLine.hidden = !(identity && identity.configured);
    this._filters.hidden = this._identityLine.hidden;
    if (identity && identity.configured) {
      const where = identity.server ? ` on ${identity.server}` : '';
      this._identityLine.textContent = `${identity.subject}${where}`;
      this._identityLine.title =
        `identity ${identity.subject} (from ${identity.source}), jobs in ${identity.jobs_dir}` +
        (identity.problem ? `\n${identity.problem}` : '');
    }

    const permission =
      'Notification' in window ? window.Notification.permission : 'denied';
    this._desktop.textContent = '';
    this._desktop.hidden = !this._desktopWanted || permission === 'granted';
    if (permission === 'default') {
      const ask = element('button', 'jobber-lab-button', 'Allow desktop notifications');
      ask.addEventListener('click', () => this._actions.askDesktopPermission());
      this._desktop.append(ask);
    } else {
      this._desktop.textContent =
        "Desktop notifications are on in jobber's settings, but this browser blocks them for this page.";
    }
  }

  private _renderLabels(jobs: IJobRow[]): void {
    const labels = Array.from(
      new Set(jobs.map(job => job.label).filter(Boolean) as string[])
    ).sort();
    const key = labels.join('\n');
    if (key === this._labelsKey) {
      return;
    }
    this._labelsKey = key;
    this._labels.replaceChildren(...labels.map(label => new Option(label)));
  }

  // One line for each sweep with jobs still running or waiting, with its "Stop all".
  private _renderSweeps(jobs: IJobRow[]): void {
    const active = new Map<string, { running: number; pending: number }>();
    for (const job of jobs) {
      if (!job.sweep || FINAL_STATES.has(job.state)) {
        continue;
      }
      const count = active.get(job.sweep) || { running: 0, pending: 0 };
      if (job.state === 'running') {
        count.running++;
      } else {
        count.pending++;
      }
      active.set(job.sweep, count);
    }
    const lines = Array.from(active, ([sweep, count]) => {
      const line = element('div', 'jobber-lab-sweep');
      const parts = [];
      if (count.running) {
        parts.push(`${count.running} running`);
      }
      if (count.pending) {
        parts.push(`${count.pending} pending`);
      }
      const name = element('span', 'jobber-lab-sweep-name', sweep);
      const stop = element('button', 'jobber-lab-button jobber-lab-stop', 'Stop all');
      stop.title = `Stop every job of ${sweep}`;
      stop.addEventListener('click', () => void this._stopSweep(sweep, stop));
      const text = element('span');
      text.append('sweep ', name, `: ${parts.join(', ')}`);
      line.append(text, stop);
      return line;
    });
    this._sweeps.replaceChildren(...lines);
    this._sweeps.hidden = lines.length === 0;
  }

  private _row(job: IJobRow): IRowNodes {
    let row = this._rows.get(job.id);
    if (!row) {
      row = this._makeRow(job.id);
      this._rows.set(job.id, row);
    }
    const key = JSON.stringify(job);
    if (row.key === key) {
      return row;
    }
    row.key = key;
    const final = FINAL_STATES.has(job.state);
    row.root.dataset.state = job.state;
    row.label.textContent = job.label || '';
    row.label.hidden = !job.label;
    row.state.textContent = job.state;
    row.state.title = job.state_text;
    row.command.textContent = job.kind === 'function' ? `ƒ ${job.command}` : job.command;
    row.command.title = job.command;
    row.usage.textContent = this._usage(job);
    row.usage.hidden = row.usage.textContent === '';
    const reason =
      job.state === 'pending' && job.pending_reason
        ? `pending: ${job.pending_reason}`
        : final && job.state_text !== job.state // "stopped" says no more than the state beside the label
          ? job.state_text
          : '';
    row.reason.textContent = reason;
    row.reason.hidden = !reason;
    row.stop.hidden = final;
    row.stop.disabled = false;
    row.rerun.hidden = !final;
    row.remove.hidden = !final;
    row.root.title = [
      `job ${job.id}: ${job.state_text}`,
      job.created ? `created ${when(job.created)}` : '',
      job.started ? `started ${when(job.started)}` : '',
      job.ended ? `ended ${when(job.ended)}` : '',
      'Click to open its live view'
    ]
      .filter(Boolean)
      .join('\n');
    this._setTime(job, row);
    return row;
  }

  private _usage(job: IJobRow): string {
    const parts = [];
    if (job.memory_now !== null || job.memory_peak !== null) {
      const running = job.state === 'running' && job.memory_now !== null;
      let memory = running
        ? `memory ${bytes(job.memory_now)}`
        : `peak memory ${bytes(job.memory_peak)}`;
      if (job.memory_limit) {
        memory += ` of ${bytes(job.memory_limit)}`;
      }
      if (running && job.memory_peak !== null) {
        memory += ` (peak ${bytes(job.memory_peak)})`;
      }
      parts.push(memory);
    } else if (job.memory_limit) {
      parts.push(`memory limit ${bytes(job.memory_limit)}`);
    }
    if (job.cpu_limit) {
      parts.push(`${job.cpu_limit} CPU${job.cpu_limit === 1 ? '' : 's'}`);
    }
    if (job.attempts && job.attempts > 1) {
      parts.push(`attempt ${job.attempt || 1}/${job.attempts}`);
    }
    return parts.join(' · ');
  }

  private _setTime(job: IJobRow, row: IRowNodes): void {
    let seconds = job.elapsed_s;
    if (seconds !== null && job.state === 'running') {
      seconds += (Date.now() - this._feed.receivedAt(job.id)) / 1000;
    }
    row.time.textContent = duration(seconds);
  }

  private _tick(): void {
    if (!this.isVisible) {
      return;
    }
    for (const [id, row] of this._rows) {
      const job = this._feed.job(id);
      if (job && job.state === 'running') {
        this._setTime(job, row);
      }
    }
  }

  private _makeRow(id: number): IRowNodes {
    const root = element('li', 'jobber-lab-job');
    root.tabIndex = 0;
    root.dataset.jobId = String(id);
    const line = element('div', 'jobber-lab-line');
    const label = element('span', 'jobber-lab-label');
    const state = element('span', 'jobber-lab-state');
    const time = element('span', 'jobber-lab-time');
    line.append(element('span', 'jobber-lab-id', String(id)), label, state, time);
    const command = element('div', 'jobber-lab-command');
    const usage = element('div', 'jobber-lab-usage');
    const reason = element('div', 'jobber-lab-reason');
    const actions = element('div', 'jobber-lab-actions');
    const stop = element('button', 'jobber-lab-button jobber-lab-stop', 'Stop');
    stop.title = `Stop job ${id}: SIGTERM, then SIGKILL`;
    const rerun = element('button', 'jobber-lab-button', 'Re-run');
    rerun.title = `Start job ${id}'s command again, as a new job`;
    const remove = element('button', 'jobber-lab-button', 'Remove');
    remove.title = `Delete job ${id}'s log and status`;
    actions.append(stop, rerun, remove);
    root.append(line, command, usage, reason, actions);

    const open = () => this._actions.openJob(id, this._feed.job(id)?.label || null);
    root.addEventListener('click', event => {
      if (!(event.target as Element).closest('button')) {
        open();
      }
    });
    root.addEventListener('keydown', event => {
      if (event.key === 'Enter' && event.target === root) {
        open();
      }
    });
    stop.addEventListener('click', () => {
      stop.disabled = true;
      this._actions.stoppedHere([id]);
      void this._act(`jobs/${id}/stop`, 'POST', `Could not stop job ${id}`);
    });
    rerun.addEventListener('click', () => {
      void this._act(`jobs/${id}/rerun`, 'POST', `Could not re-run job ${id}`).then(
        row => {
          if (row) {
            Notification.info(`Job ${row.id} started: a re-run of job ${id}.`, {
              autoClose: 5000
            });
          }
        }
      );
    });
    remove.addEventListener('click', () => void this._remove(id));
    return { root, label, state, time, command, usage, reason, stop, rerun, remove, key: '' };
  }

  private async _act(
    path: string,
    method: string,
    failure: string,
    body?: unknown
  ): Promise<IJobRow | null> {
    try {
      return await requestAPI<IJobRow>(path, {
        method,
        body: body === undefined ? undefined : JSON.stringify(body)
      });
    } catch (error) {
      Notification.error(`${failure}: ${errorText(error)}`, { autoClose: 8000 });
      return null;
    }
  }

  private async _remove(id: number): Promise<void> {
    const answer = await showDialog({
      title: `Remove job ${id}?`,
      body: 'Its log and status are deleted; this cannot be undone.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (answer.button.accept) {
      await this._act(`jobs/${id}`, 'DELETE', `Could not remove job ${id}`);
    }
  }

  private async _stopSweep(sweep: string, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    this._actions.stoppedHere(
      this._feed.jobs
        .filter(job => job.sweep === sweep && !FINAL_STATES.has(job.state))
        .map(job => job.id)
    );
    try {
      const answer = await requestAPI<{ stopped: number[] }>('jobs:stop', {
        method: 'POST',
        body: JSON.stringify({ label: sweep })
      });
      const n = answer.stopped.length;
      Notification.info(`Stopped ${n} job${n === 1 ? '' : 's'} of ${sweep}.`, {
        autoClose: 5000
      });
    } catch (error) {
      Notification.error(`Could not stop ${sweep}: ${errorText(error)}`, {
        autoClose: 8000
      });
      button.disabled = false;
    }
  }

  private _identity: IIdentity | null = null;
  private _identityProblem: string | null = null;
  private _desktopWanted = false;
  private _shown = PAGE;
  private _rows = new Map<number, IRowNodes>();
  private _timer: number;
  private _labelsKey = '';
  private _labels: HTMLDataListElement;
  private _summary = element('span', 'jobber-lab-summary');
  private _identityLine = element('div');
  private _message = element('div');
  private _desktop = element('div');
  private _filters = element('div', 'jobber-lab-filters');
  private _stateFilter = element('select');
  private _labelFilter = element('input');
  private _sweeps = element('div');
  private _empty = element('div');
  private _list = element('ul');
  private _more = element('button');
}
