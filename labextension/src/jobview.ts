// A job's live view in a main-area tab: the SAME view the cell shows
// (jobber_magics/_jobview.js, an anywidget module), fed by the server extension's
// /jobber/api/jobs/{id}/view socket instead of a kernel's comm. The socket carries the
// widget's state and its custom messages exactly as the kernel widget sends them, so the
// only code here is a model with the few methods the view calls.
import { MainAreaWidget } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

// One source file for the cell's view and this tab's: bundled from the Python package.
import jobView from '../../jobber_magics/_jobview.js';
import { errorText, requestAPI, socketUrl } from './api';

type Callback = (...args: any[]) => void;

/**
 * The part of a Backbone/anywidget model the view uses: get, set, on, off, send and
 * save_changes. State comes from the server; the view's own set() calls (the log it keeps
 * for a saved notebook) stay local.
 */
export class SocketModel {
  constructor(
    state: { [key: string]: any },
    private _send: (content: any) => void
  ) {
    this._state = { ...state };
  }

  get(key: string): any {
    return this._state[key];
  }

  set(
    key: string | { [key: string]: any },
    value?: any,
    options?: { silent?: boolean }
  ): void {
    let changes: { [key: string]: any };
    if (typeof key === 'string') {
      changes = { [key]: value };
    } else {
      changes = key;
      options = value;
    }
    const changed = Object.keys(changes).filter(
      name =>
        JSON.stringify(this._state[name]) !== JSON.stringify(changes[name])
    );
    Object.assign(this._state, changes);
    if (options && options.silent) {
      return;
    }
    for (const name of changed) {
      this.emit(`change:${name}`, this, this._state[name]);
    }
    // The view counts any word from the server as a sign of life, changed or not.
    this.emit('change', this);
  }

  on(name: string, callback: Callback): void {
    let callbacks = this._listeners.get(name);
    if (!callbacks) {
      callbacks = new Set();
      this._listeners.set(name, callbacks);
    }
    callbacks.add(callback);
  }

  off(name?: string, callback?: Callback): void {
    if (!name) {
      this._listeners.clear();
    } else if (!callback) {
      this._listeners.delete(name);
    } else {
      this._listeners.get(name)?.delete(callback);
    }
  }

  send(content: any): void {
    this._send(content);
  }

  /** Nothing to sync: the server owns the state. */
  save_changes(): void {
    return;
  }

  emit(name: string, ...args: any[]): void {
    for (const callback of Array.from(this._listeners.get(name) || [])) {
      callback(...args);
    }
  }

  private _state: { [key: string]: any };
  private _listeners = new Map<string, Set<Callback>>();
}

const RETRY_MS = [1000, 2000, 5000];

/** The live view of one job, for as long as the tab is open. */
export class JobView extends Widget {
  /**
   * @param jobId the job to show
   * @param onStop called when the reader presses the view's Stop
   */
  constructor(
    readonly jobId: number,
    private _onStop: () => void = () => undefined
  ) {
    super();
    this.addClass('jobber-lab-jobview');
    this._placeholder = document.createElement('div');
    this._placeholder.className = 'jobber-lab-jobview-message';
    this._placeholder.textContent = `Connecting to job ${jobId}…`;
    this.node.append(this._placeholder);
    this._connect();
  }

  /** Try again after a refusal (the identity was set since): a live view is left alone. */
  retry(): void {
    if (this._refusedNow && !this._closed) {
      this._refusedNow = false;
      this._placeholder.textContent = `Connecting to job ${this.jobId}…`;
      this._connect();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._closed = true;
    this._teardown();
    this._socket?.close();
    super.dispose();
  }

  private _connect(): void {
    const socket = new WebSocket(socketUrl(`jobs/${this.jobId}/view`));
    this._socket = socket;
    socket.onmessage = event => {
      const message = JSON.parse(event.data);
      if (message.type === 'state') {
        this._failures = 0;
        this._state(message.state);
      } else if (message.type === 'custom') {
        this._model?.emit('msg:custom', message.content, []);
      }
    };
    let opened = false;
    socket.onopen = () => {
      opened = true;
    };
    socket.onclose = () => {
      if (this._closed || this._socket !== socket) {
        return;
      }
      if (opened) {
        this._retryLater();
      } else {
        void this._refused();
      }
    };
  }

  // Dropped (the Jupyter server restarted): the view says it is no longer live until a new
  // socket brings a fresh state, which starts the view afresh.
  private _retryLater(): void {
    const delay = RETRY_MS[Math.min(this._failures++, RETRY_MS.length - 1)];
    this._retry = window.setTimeout(() => {
      this._teardown();
      this._connect();
    }, delay);
  }

  // A socket refused before it opened tells the browser no reason: the HTTP API does
  // ("no job 12 for this identity"). A job that is not there is said, not retried.
  private async _refused(): Promise<void> {
    try {
      await requestAPI(`jobs/${this.jobId}`);
    } catch (error) {
      if (
        error instanceof ServerConnection.ResponseError &&
        error.response.status >= 400 &&
        error.response.status < 500
      ) {
        this._teardown();
        this._placeholder.textContent = errorText(error);
        this._placeholder.hidden = false;
        this._refusedNow = true;
        return;
      }
    }
    if (!this._closed) {
      this._retryLater();
    }
  }

  private _state(state: { [key: string]: any }): void {
    if (this._model) {
      this._model.set(state);
      return;
    }
    const model = new SocketModel(state, content => {
      if (content && content.event === 'stop') {
        this._onStop();
      }
      if (this._socket && this._socket.readyState === WebSocket.OPEN) {
        this._socket.send(JSON.stringify({ type: 'custom', content }));
      }
    });
    this._model = model;
    this._placeholder.hidden = true;
    this._el = document.createElement('div');
    this._el.className = 'jobber-lab-jobview-body';
    this.node.append(this._el);
    jobView.initialize({ model });
    this._cleanup = jobView.render({ model, el: this._el }) || null;
  }

  private _teardown(): void {
    window.clearTimeout(this._retry);
    this._cleanup?.();
    this._cleanup = null;
    // The view keeps one log buffer per model: 'destroy' lets it go.
    this._model?.emit('destroy');
    this._model = null;
    this._el?.remove();
    this._el = null;
  }

  private _socket: WebSocket | null = null;
  private _model: SocketModel | null = null;
  private _el: HTMLElement | null = null;
  private _cleanup: (() => void) | null = null;
  private _placeholder: HTMLElement;
  private _closed = false;
  private _refusedNow = false;
  private _failures = 0;
  private _retry = 0;
}

/** A main-area tab holding a job's live view. */
export function jobTab(
  jobId: number,
  label: string | null,
  onStop: () => void
): MainAreaWidget<JobView> {
  const widget = new MainAreaWidget({ content: new JobView(jobId, onStop) });
  widget.id = `jobber-job-${jobId}`;
  setTabLabel(widget, label);
  widget.title.caption = `jobber job ${jobId}: its live log and status`;
  widget.title.closable = true;
  return widget;
}

/** "job 12 train", or "job 12" for a job without a label. */
export function setTabLabel(
  widget: MainAreaWidget<JobView>,
  label: string | null
): void {
  const id = widget.content.jobId;
  widget.title.label = label ? `job ${id} ${label}` : `job ${id}`;
}
