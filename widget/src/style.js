// The element's shadow styles (no external stylesheet: one module is all a host loads).
export const CSS = `
:host { display: block; position: relative; min-height: 320px; height: 480px; font: 13px/1.35 system-ui, sans-serif;
  color: #1f2933; background: #fbfbfd; border: 1px solid #d8dce3; border-radius: 6px; overflow: hidden; }
.toolbar { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 6px 10px; border-bottom: 1px solid #e3e6eb;
  background: #fff; }
.toolbar[hidden] { display: none; }
.toolbar label { display: inline-flex; gap: 4px; align-items: center; white-space: nowrap; }
.toolbar .layers { display: inline-flex; gap: 8px; }
.toolbar input[type=range] { width: 160px; }
.status { margin-left: auto; color: #52606d; font-size: 12px; }
.stage { position: absolute; inset: 38px 0 0 0; }
:host([toolbar=none]) .stage { inset: 0; }
svg.layered, .fleet { width: 100%; height: 100%; display: block; cursor: grab; }
.node { cursor: pointer; }
.node:focus { outline: none; }
.node:focus .shape, .node[aria-pressed=true] .shape { stroke: #1d4ed8; stroke-width: 3; }
.node.focus .shape { stroke-width: 3; }
.node.ranked .shape { stroke: #7c3aed; stroke-width: 3; }
.node .label { font-size: 12.5px; font-weight: 600; fill: #111827; }
.node .sub { font-size: 10.5px; fill: #52606d; }
.node .glyph { font-size: 9px; font-weight: 700; fill: #52606d; letter-spacing: .04em; }
.edge { cursor: pointer; }
.edge:hover .line { stroke-width: 4; }
.edge.highlight .line { stroke: #7c3aed; stroke-width: 4; }
.tooltip { position: absolute; z-index: 3; max-width: 640px; background: #111827; color: #f9fafb; padding: 6px 8px;
  border-radius: 4px; font-size: 12px; pointer-events: none; }
.tooltip table, .panel table { border-collapse: collapse; font-size: 11.5px; }
.tooltip th, .tooltip td, .panel th, .panel td { padding: 1px 6px; text-align: left; }
.panel { position: absolute; right: 8px; top: 46px; width: 300px; max-height: calc(100% - 60px); overflow: auto; z-index: 2;
  background: #fff; border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 10px; box-shadow: 0 2px 8px #0002; }
.panel h3 { margin: 2px 0 6px; font-size: 14px; }
.panel h4 { margin: 8px 0 4px; font-size: 12.5px; }
.panel ul, .panel ol { margin: 0; padding-left: 18px; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; border: 0; }
`;
