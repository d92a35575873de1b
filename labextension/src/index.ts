// jobber-lab: the Jobs sidebar, a job's live view in a tab, end-of-job notifications and
// the status bar item, over the jobber_lab server extension (one identity per Jupyter
// server: the panel's certPath/server settings are sent to it on load and on change).
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { errorText, IIdentity, requestAPI } from './api';
import { JobFeed } from './feed';
import { JobView, jobTab, setTabLabel } from './jobview';
import { INotifySettings, Notifier, NotifyPolicy } from './notify';
import { JobsPanel } from './panel';
import { JobsStatus } from './status';

const PLUGIN_ID = 'jobber-lab:plugin';

/** Why the identity could not be set, as the panel says it. */
function identityProblem(error: unknown): string {
  const status =
    error instanceof ServerConnection.ResponseError ? error.response.status : 0;
  if (status === 404) {
    return 'The jobber server extension is not running in this Jupyter server: enable it (jupyter server extension enable jobber_lab) and restart JupyterLab.';
  }
  if (status >= 400 && status < 500) {
    return `jobber could not use these settings: ${errorText(error)}`;
  }
  return `The jobber server extension did not answer: ${errorText(error)}`;
}

const jobsIcon = new LabIcon({
  name: 'jobber-lab:jobs',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<rect x="1" y="2" width="3" height="3" rx="0.5"/><rect x="6" y="2.5" width="9" height="2" rx="0.5"/>' +
    '<rect x="1" y="6.5" width="3" height="3" rx="0.5"/><rect x="6" y="7" width="9" height="2" rx="0.5"/>' +
    '<rect x="1" y="11" width="3" height="3" rx="0.5"/><rect x="6" y="11.5" width="9" height="2" rx="0.5"/>' +
    '</g></svg>'
});

namespace CommandIDs {
  export const openJob = 'jobber:open-job';
  export const showPanel = 'jobber:show-jobs';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: "jobber's Jobs panel, job views, notifications and status bar item.",
  autoStart: true,
  requires: [ILabShell],
  optional: [ISettingRegistry, IStatusBar, ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const feed = new JobFeed();
    const tracker = new WidgetTracker<MainAreaWidget<JobView>>({
      namespace: 'jobber-job'
    });

    const openJob = (id: number, label: string | null) =>
      app.commands.execute(CommandIDs.openJob, { id, label: label || '' });
    const notifier = new Notifier((id, label) => void openJob(id, label));

    const panel = new JobsPanel(feed, {
      openJob: (id, label) => void openJob(id, label),
      stoppedHere: ids => notifier.stoppedHere(ids),
      openSettings: () =>
        void app.commands.execute('settingeditor:open', { query: 'jobber' }),
      askDesktopPermission: () =>
        void notifier.askPermission().then(() => panel.setDesktopWanted(true))
    });
    panel.title.icon = jobsIcon;
    shell.add(panel, 'left', { rank: 450 });
    restorer?.add(panel, panel.id);

    app.commands.addCommand(CommandIDs.openJob, {
      label: args => `Open job ${args.id}`,
      describedBy: {
        args: {
          type: 'object',
          properties: { id: { type: 'number' }, label: { type: 'string' } }
        }
      },
      execute: args => {
        const id = Number(args.id);
        const existing = tracker.find(widget => widget.content.jobId === id);
        if (existing) {
          shell.activateById(existing.id);
          return existing;
        }
        const label = (args.label as string) || feed.job(id)?.label || null;
        const widget = jobTab(id, label, () => notifier.stoppedHere([id]));
        void tracker.add(widget);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
        return widget;
      }
    });
    app.commands.addCommand(CommandIDs.showPanel, {
      label: 'Show jobber Jobs',
      execute: () => shell.activateById(panel.id)
    });
    palette?.addItem({ command: CommandIDs.showPanel, category: 'jobber' });
    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.openJob,
        args: widget => ({ id: widget.content.jobId }),
        name: widget => String(widget.content.jobId)
      });
    }

    const status = new JobsStatus(feed, () => shell.activateById(panel.id));
    statusBar?.registerStatusItem('jobber-lab:status', {
      item: status,
      align: 'left',
      rank: 50
    });

    feed.ended.connect((_, ended) => notifier.tell(ended));
    // A restarted Jupyter server forgot the settings' identity: give it again.
    feed.reconnected.connect(() => {
      sent = '';
      void sendIdentity(wanted.certPath, wanted.server);
    });
    // A tab restored with the page opens before the list arrives: its label comes then.
    feed.changed.connect(() =>
      tracker.forEach(widget =>
        setTabLabel(widget, feed.job(widget.content.jobId)?.label || null)
      )
    );

    // The socket lists one identity's jobs: it starts again only when that identity changes.
    let listed = '';
    const showIdentity = (identity: IIdentity | null, problem: string | null) => {
      panel.setIdentity(identity, problem);
      status.setIdentity(identity);
      if (identity && identity.configured) {
        if (identity.hash !== listed) {
          listed = identity.hash;
          feed.connect();
        }
        tracker.forEach(widget => widget.content.retry());
      } else {
        listed = '';
        feed.close();
      }
    };

    // The identity comes from the settings (or $JOBBER_CERT on the server when certPath is
    // empty): PUT on load and whenever certPath or server change; the list is then another
    // identity's, so the events socket starts again.
    let sent = '';
    let wanted = { certPath: '', server: '' };
    const sendIdentity = async (certPath: string, server: string) => {
      wanted = { certPath, server };
      const key = JSON.stringify([certPath, server]);
      if (key === sent) {
        return;
      }
      sent = key;
      try {
        const identity = await requestAPI<IIdentity>('identity', {
          method: 'PUT',
          body: JSON.stringify({ certPath, server })
        });
        showIdentity(identity, null);
      } catch (error) {
        sent = '';
        showIdentity(null, identityProblem(error));
      }
    };

    const apply = (settings: ISettingRegistry.ISettings) => {
      const get = (name: string) => settings.get(name).composite;
      notifier.settings = {
        notifications: (get('notifications') as NotifyPolicy) || 'long',
        notifyAfterSeconds: Number(get('notifyAfterSeconds') ?? 60),
        desktopNotifications: Boolean(get('desktopNotifications'))
      } as INotifySettings;
      panel.setDesktopWanted(notifier.settings.desktopNotifications);
      if (notifier.settings.desktopNotifications) {
        // Chromium asks at once; a browser that wants a click gets it from the panel's button.
        void notifier.askPermission().then(() => panel.setDesktopWanted(true));
      }
      void sendIdentity(
        String(get('certPath') || '').trim(),
        String(get('server') || '').trim()
      );
    };

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(error => {
          console.error('jobber-lab: could not load its settings', error);
          void sendIdentity('', '');
        });
    } else {
      void sendIdentity('', '');
    }
  }
};

export default plugin;
