// The panel's own style, and the job view's: one file for the cell's view and the tab's.
import './base.css';
import '../../jobber_magics/_jobview.css';
