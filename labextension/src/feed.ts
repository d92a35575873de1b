// The identity's jobs, live: one events socket per browser tab, shared by the panel, the
// status bar item and the notifications. The server sends a snapshot first and then every
// change, so a reconnect (a restarted Jupyter server, a dropped network) starts afresh.
import { ISignal, Signal } from '@lumino/signaling';

import { Counts, EventMessage, IJobRow, socketUrl } from './api';

/** The end of a job, as the server words it. */
export interface IJobEnded {
  job: IJobRow;
  message: string;
  notify: boolean;
}

const RETRY_MS = [1000, 2000, 5000, 10000];

/** The jobs of the identity, kept up to date from the server's events socket. */
export class JobFeed {
  /** Whether the socket is open and the snapshot arrived. */
  get connected(): boolean {
    return this._connected;
  }

  /** Newest first. */
  get jobs(): IJobRow[] {
    return Array.from(this._jobs.values()).sort((a, b) => b.id - a.id);
  }

  get counts(): Counts {
    return this._counts;
  }

  /** When each row arrived (ms), so a running job's elapsed time can tick between events. */
  receivedAt(id: number): number {
    return this._received.get(id) || Date.now();
  }

  job(id: number): IJobRow | undefined {
    return this._jobs.get(id);
  }

  /** Emitted on every change of the list, the counts or the connection. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when the list arrives again after the socket dropped (a restarted server). */
  get reconnected(): ISignal<this, void> {
    return this._reconnected;
  }

  /** Emitted once for each job that ends while the socket is open. */
  get ended(): ISignal<this, IJobEnded> {
    return this._ended;
  }

  /** Open the socket (again): after the identity changed, the list is another's. */
  connect(): void {
    this._closeSocket();
    this._wanted = true;
    const socket = new WebSocket(socketUrl('events'));
    this._socket = socket;
    socket.onmessage = event => {
      if (this._socket === socket) {
        this._receive(JSON.parse(event.data) as EventMessage);
      }
    };
    socket.onclose = () => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      this._connected = false;
      this._changed.emit();
      if (this._wanted) {
        const delay = RETRY_MS[Math.min(this._failures, RETRY_MS.length - 1)];
        this._failures++;
        this._retry = window.setTimeout(() => this.connect(), delay);
      }
    };
  }

  /** Close the socket and forget the jobs (no identity: nothing to list). */
  close(): void {
    this._wanted = false;
    this._closeSocket();
    this._jobs.clear();
    this._received.clear();
    this._counts = {};
    this._connected = false;
    this._changed.emit();
  }

  private _closeSocket(): void {
    window.clearTimeout(this._retry);
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.close();
    }
  }

  private _receive(message: EventMessage): void {
    const now = Date.now();
    switch (message.type) {
      case 'snapshot':
        this._jobs.clear();
        this._received.clear();
        for (const row of message.jobs) {
          this._jobs.set(row.id, row);
          this._received.set(row.id, now);
        }
        this._counts = message.counts;
        this._connected = true;
        if (this._failures > 0) {
          this._failures = 0;
          this._reconnected.emit();
        }
        break;
      case 'job':
        this._jobs.set(message.job.id, message.job);
        this._received.set(message.job.id, now);
        this._counts = message.counts;
        break;
      case 'removed':
        this._jobs.delete(message.id);
        this._received.delete(message.id);
        this._counts = message.counts;
        break;
      case 'ended':
        this._jobs.set(message.job.id, message.job);
        this._received.set(message.job.id, now);
        this._ended.emit({
          job: message.job,
          message: message.message,
          notify: message.notify
        });
        break;
      default:
        return;
    }
    this._changed.emit();
  }

  private _jobs = new Map<number, IJobRow>();
  private _received = new Map<number, number>();
  private _counts: Counts = {};
  private _connected = false;
  private _wanted = false;
  private _failures = 0;
  private _retry = 0;
  private _socket: WebSocket | null = null;
  private _changed = new Signal<this, void>(this);
  private _ended = new Signal<this, IJobEnded>(this);
  private _reconnected = new Signal<this, void>(this);
}
