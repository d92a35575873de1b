// The status bar's "jobber: 3 running, 1 pending"; a click opens the Jobs panel.
import { Widget } from '@lumino/widgets';

import { IIdentity } from './api';
import { JobFeed } from './feed';
import { countsText } from './format';

export class JobsStatus extends Widget {
  constructor(
    private _feed: JobFeed,
    onClick: () => void
  ) {
    super();
    this.addClass('jobber-lab-status');
    this._text.className = 'jp-StatusBar-TextItem';
    this.node.append(this._text);
    this.node.title = 'jobber: open the Jobs panel';
    this.node.addEventListener('click', onClick);
    this._feed.changed.connect(this._render, this);
    this._render();
  }

  setIdentity(identity: IIdentity | null): void {
    this._identity = identity;
    this._render();
  }

  private _render(): void {
    let text = 'jobber: …';
    if (this._identity && !this._identity.configured) {
      text = 'jobber: no identity';
    } else if (this._feed.connected) {
      text = `jobber: ${countsText(this._feed.counts)}`;
    }
    this._text.textContent = text;
  }

  private _identity: IIdentity | null = null;
  private _text = document.createElement('span');
}
