// The cell's view, jobber_magics/_jobview.js (an anywidget module, plain JavaScript).
declare module '*/_jobview.js' {
  const view: {
    initialize(args: { model: any }): void;
    render(args: { model: any; el: HTMLElement }): (() => void) | void;
  };
  export default view;
}
