// Being told when a job ends: a JupyterLab notification (the notification center) with an
// "Open" button, and, when the user opted in and the tab is in the background, the
// browser's desktop notification. The server words the message (one function in jobber's
// core does it for the panel, `jobber wait --notify-cmd` and on_end alike); the user's
// setting decides which endings are worth telling, so short jobs do not flood.
import { Notification } from '@jupyterlab/apputils';

import { IJobEnded } from './feed';

/** Which endings to tell: none, --notify jobs, those and long ones, or all. */
export type NotifyPolicy = 'off' | 'flagged' | 'long' | 'all';

export interface INotifySettings {
  notifications: NotifyPolicy;
  notifyAfterSeconds: number;
  desktopNotifications: boolean;
}

/** Whether an ending is to be told, under the user's settings. */
export function wanted(ended: IJobEnded, settings: INotifySettings): boolean {
  const flagged = ended.notify || ended.job.notify;
  switch (settings.notifications) {
    case 'off':
      return false;
    case 'flagged':
      return flagged;
    case 'all':
      return true;
    default:
      return flagged || (ended.job.elapsed_s || 0) >= settings.notifyAfterSeconds;
  }
}

export class Notifier {
  constructor(private _open: (id: number, label: string | null) => void) {}

  settings: INotifySettings = {
    notifications: 'long',
    notifyAfterSeconds: 60,
    desktopNotifications: false
  };

  /** The user stopped these jobs from this page: being told so again is noise. */
  stoppedHere(ids: number[]): void {
    for (const id of ids) {
      this._stoppedHere.add(id);
    }
  }

  /** Tell of one ending, if the settings want it told. */
  tell(ended: IJobEnded): void {
    const ownStop =
      this._stoppedHere.delete(ended.job.id) && ended.job.state === 'stopped';
    if (ownStop || !wanted(ended, this.settings)) {
      return;
    }
    const { job, message } = ended;
    const open = () => this._open(job.id, job.label);
    const type =
      job.state === 'exited' ? 'success' : job.state === 'stopped' ? 'info' : 'error';
    Notification.emit(message, type, {
      // A failure waits to be read; a success goes by itself (it stays in the center).
      autoClose: type === 'error' ? false : 10000,
      actions: [
        { label: 'Open', caption: `Open job ${job.id}'s live view`, callback: open }
      ]
    });
    if (
      this.settings.desktopNotifications &&
      document.hidden &&
      'Notification' in window &&
      window.Notification.permission === 'granted'
    ) {
      const desktop = new window.Notification('jobber', {
        body: message,
        tag: `jobber-job-${job.id}`
      });
      desktop.onclick = () => {
        window.focus();
        open();
        desktop.close();
      };
    }
  }

  private _stoppedHere = new Set<number>();

  /** Ask the browser's permission (a click in the panel is the user's gesture). */
  async askPermission(): Promise<void> {
    if ('Notification' in window && window.Notification.permission === 'default') {
      await window.Notification.requestPermission();
    }
  }
}
