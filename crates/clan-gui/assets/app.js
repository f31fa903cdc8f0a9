// The clan GUI: one page over the server's JSON API (see /api/openapi.json). Everything it
// shows comes from the clan, which may be hostile: text is only ever set as text
// (textContent, attribute values), never parsed as HTML.

const KEY = 'clan-gui-key';

// The redirect after the token hands over the request key in the fragment.
{
  const match = location.hash.match(/^#key=([0-9a-f]+)$/);
  if (match) {
    localStorage.setItem(KEY, match[1]);
    history.replaceState(null, '', '/#/');
  }
}

/** Element `tag` with `attrs` (on* are listeners) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'line', 'circle', 'text', 'g', 'title'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'value' && !svg) el.value = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, data) {
    super((data && data.error) || `HTTP ${status}`);
    this.status = status;
    this.data = data || { error: this.message, causes: [], hint: null };
  }
}

/** `method path` on the API with the request key; JSON in and out. */
export async function api(method, path, body) {
  const headers = { 'X-Clan-Key': localStorage.getItem(KEY) || '' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** An error as a block: message, causes, hint. */
function errorBlock(error) {
  const data = error.data || { error: String(error), causes: [] };
  return h('div', { class: 'error', role: 'alert' },
    data.error,
    (data.causes || []).map((cause) => h('div', {}, 'caused by: ', cause)),
    data.hint ? h('div', { class: 'hint' }, 'hint: ', data.hint) : null);
}

const main = () => document.getElementById('main');
function show(...children) {
  main().replaceChildren(h('div', { class: 'view' }, ...children));
}

let session = null;
let fleetCache = null;

async function fleet(fresh = false) {
  if (!fleetCache || fresh) fleetCache = await api('GET', '/api/fleet');
  return fleetCache;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

// ---------------------------------------------------------------- fleet map

const ROW = 30;

/** The machines' live status (`/api/status`) by name, once it has arrived. */
let liveStatus = new Map();
/** Why the live status could not be had, when it could not. */
let statusError = null;

/** A machine's live status in a word, and the longer text behind it. */
function statusOf(name) {
  const status = liveStatus.get(name);
  if (!status) return { word: liveStatus.size || statusError ? 'unknown' : 'asking…', title: statusError || '' };
  const last = status.last ? `; last: ${status.last.action} ${new Date(status.last.time * 1000).toLocaleString()}` : '';
  const via = status.reached ? `reached over ${status.reached.network || status.reached.source} in ${status.reached.elapsedMs} ms` : '';
  if (!status.reached) return { word: 'unreachable', title: status.error || '' };
  if (status.inSync === true) return { word: 'in sync', title: `${via}; generation ${status.current}${last}` };
  if (!status.current) return { word: 'never deployed', title: via };
  if (status.inSync === false) return { word: 'out of sync', title: `${via}; runs ${status.current}, the clan builds ${status.wanted}${last}` };
  return { word: 'unknown', title: status.error || via };
}

function statusBadge(name) {
  const { word, title } = statusOf(name);
  return h('span', { class: `status ${word.replace(/[^a-z]+/g, '-')}`, title }, word);
}

/** The rows of the fleet list: a header per tag, then its machines (a machine is listed
 * under each of its tags; untagged ones last). */
function fleetRows(machines, search, tag) {
  const needle = search.trim().toLowerCase();
  const groups = new Map();
  for (const machine of machines) {
    const tags = machine.tags.length ? machine.tags : ['(untagged)'];
    if (tag && !tags.includes(tag)) continue;
    if (needle && !(machine.name.includes(needle) || tags.some((t) => t.includes(needle))
      || (machine.targetHost || '').toLowerCase().includes(needle))) continue;
    for (const t of tags) {
      if (tag && t !== tag) continue;
      if (!groups.has(t)) groups.set(t, []);
      groups.get(t).push(machine);
    }
  }
  const rows = [];
  const names = [...groups.keys()].sort((a, b) => (a === '(untagged)') - (b === '(untagged)') || a.localeCompare(b));
  for (const name of names) {
    rows.push({ group: name, count: groups.get(name).length });
    for (const machine of groups.get(name)) rows.push({ machine });
  }
  return rows;
}

/** A list that renders only the rows in view, so 1,000 machines cost what 30 do. */
function virtualList(rows, onOpen) {
  const spacer = h('div', { class: 'spacer' });
  const list = h('div', { class: 'fleet-list', 'data-testid': 'fleet-list' }, spacer);
  let current = rows;
  const render = () => {
    spacer.style.height = `${current.length * ROW}px`;
    const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 10);
    const last = Math.min(current.length, first + Math.ceil((list.clientHeight || 600) / ROW) + 20);
    const nodes = [];
    for (let i = first; i < last; i++) {
      const row = current[i];
      const el = row.group
        ? h('div', { class: 'fleet-row group' }, `${row.group} `, h('span', { class: 'muted' }, `${row.count}`))
        : h('div', { class: 'fleet-row machine', 'data-machine': row.machine.name, onclick: () => onOpen(row.machine.name) },
          h('span', { class: 'name' }, row.machine.name),
          statusBadge(row.machine.name),
          h('span', { class: 'target' }, row.machine.targetHost || '—'),
          h('span', {}, row.machine.tags.map((t) => h('span', { class: 'tag' }, t))),
          h('span', { class: 'muted' }, row.machine.roles.map((r) => `${r.instance}/${r.role}`).join(', ')));
      el.style.top = `${i * ROW}px`;
      nodes.push(el);
    }
    spacer.replaceChildren(...nodes);
  };
  list.addEventListener('scroll', () => requestAnimationFrame(render));
  return { element: list, render, set(rows) { current = rows; list.scrollTop = 0; render(); } };
}

/** Machines on an outer ring, instances inside, an edge per membership (small fleets). */
function fleetMap(machines, instances) {
  const width = 900, height = 340, cx = width / 2, cy = height / 2;
  const sorted = [...machines].sort((a, b) => (a.tags[0] || '~').localeCompare(b.tags[0] || '~') || a.name.localeCompare(b.name));
  const at = new Map();
  sorted.forEach((m, i) => {
    const angle = (2 * Math.PI * i) / sorted.length;
    at.set(m.name, [cx + 400 * Math.cos(angle), cy + 150 * Math.sin(angle)]);
  });
  const names = Object.keys(instances);
  const edges = [], nodes = [];
  names.forEach((name, i) => {
    const angle = (2 * Math.PI * i) / Math.max(names.length, 1);
    const [x, y] = names.length === 1 ? [cx, cy] : [cx + 150 * Math.cos(angle), cy + 60 * Math.sin(angle)];
    for (const members of Object.values(instances[name].roles || {})) {
      for (const member of members) {
        const to = at.get(member);
        if (to) edges.push(h('line', { x1: x, y1: y, x2: to[0], y2: to[1], stroke: '#9fb3d1' }));
      }
    }
    nodes.push(h('g', {}, h('circle', { cx: x, cy: y, r: 7, fill: '#b25e09' }),
      h('text', { x: x + 9, y: y + 4 }, `${name} (${instances[name].service})`)));
  });
  for (const m of sorted) {
    const [x, y] = at.get(m.name);
    const { word, title } = statusOf(m.name);
    nodes.push(h('g', { class: `map-machine status ${word.replace(/[^a-z]+/g, '-')}`, 'data-map-machine': m.name }, h('circle', { cx: x, cy: y, r: 8 }),
      h('title', {}, `${m.name} (${word}): ${m.tags.join(', ')}${title ? `; ${title}` : ''}`),
      h('text', { x: x + 10, y: y + 4 }, m.name)));
  }
  return h('svg', { class: 'map', viewBox: `0 0 ${width} ${height}`, 'data-testid': 'fleet-map' }, edges, nodes);
}

async function fleetView() {
  const data = await fleet(true);
  const machines = data.machines;
  const tags = [...new Set(machines.flatMap((m) => m.tags))].sort();
  const search = h('input', { type: 'search', placeholder: 'Search machines, tags, targets', 'aria-label': 'search', id: 'fleet-search' });
  const tagSelect = h('select', { 'aria-label': 'tag', id: 'fleet-tag' }, h('option', { value: '' }, 'every tag'), tags.map((t) => h('option', { value: t }, t)));
  const count = h('span', { class: 'muted' });
  const list = virtualList([], (name) => { location.hash = `#/machine/${encodeURIComponent(name)}`; });
  const update = () => {
    const rows = fleetRows(machines, search.value, tagSelect.value);
    count.textContent = `${rows.filter((r) => r.machine).length} entries`;
    list.set(rows);
  };
  search.addEventListener('input', update);
  tagSelect.addEventListener('change', update);
  const map = h('div', {}, machines.length > 0 && machines.length <= 60 ? fleetMap(machines, data.instances) : null);
  // Live status asks every machine over SSH: it arrives after the page is up.
  liveStatus = new Map();
  statusError = null;
  const redraw = () => {
    if (machines.length <= 60) map.replaceChildren(fleetMap(machines, data.instances));
    list.render();
  };
  api('GET', '/api/status').then((statuses) => {
    liveStatus = new Map(statuses.map((s) => [s.machine, s]));
    redraw();
  }, (error) => { statusError = `no live status: ${error.message}`; redraw(); });
  const instanceCards = Object.entries(data.instances).map(([name, instance]) =>
    h('div', { class: 'card', 'data-instance': name },
      h('div', { class: 'row' }, h('strong', {}, name), h('span', { class: 'muted' }, instance.service),
        h('a', { href: `#/instance/${encodeURIComponent(name)}` }, 'edit')),
      Object.entries(instance.roles || {}).map(([role, members]) =>
        h('div', {}, h('span', { class: 'tag' }, role), ' ', members.join(', ') || h('span', { class: 'muted' }, 'no members')))));
  show(
    h('h1', {}, data.meta.name, ' ', h('span', { class: 'muted' }, `${machines.length} machines, ${Object.keys(data.instances).length} instances`)),
    machines.length === 0 ? h('div', { class: 'card' }, 'No machines yet. ', h('a', { href: '#/new-machine' }, 'Add a machine')) : null,
    map,
    h('div', { class: 'grid' },
      h('div', {}, h('div', { class: 'row' }, search, tagSelect, count), h('p'), list.element),
      h('div', {}, h('h2', {}, 'Instances'), instanceCards.length ? instanceCards : h('p', { class: 'muted' }, 'None yet: ', h('a', { href: '#/services' }, 'pick a service')))));
  update();
}

// ---------------------------------------------------------------- machine page

function table(headers, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, row.map((cell) => h('td', {}, cell))))));
}

function configSection(name, value) {
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value || {});
  if (entries.length === 0) return null;
  return h('details', { class: 'card', 'data-section': name },
    h('summary', {}, h('strong', {}, name), ' ', h('span', { class: 'muted' }, `${entries.length}`)),
    table(['name', 'value'], entries.map(([key, v]) => [h('code', {}, String(key)),
      typeof v === 'object' ? h('pre', {}, JSON.stringify(v, null, 2)) : String(v)])));
}

async function machineView(name) {
  const { machine, vars, varsError } = await api('GET', `/api/machines/${encodeURIComponent(name)}`);
  const generationsBox = h('div', { id: 'generations' }, h('button', { class: 'secondary', onclick: () => loadGenerations(name, generationsBox) }, 'Ask the machine for its generations'));
  const config = machine.config || {};
  show(
    h('h1', {}, machine.name, ' ', h('span', { class: 'muted' }, machine.class)),
    h('div', { class: 'card row' },
      h('span', {}, 'target: ', h('code', {}, machine.targetHost || '(by domain)')),
      h('span', {}, machine.tags.map((t) => h('span', { class: 'tag' }, t))),
      h('button', { id: 'deploy', onclick: () => startDeploy([name], false) }, 'Deploy'),
      h('button', { id: 'dry-run', class: 'secondary', onclick: () => startDeploy([name], true) }, 'Dry run'),
      h('button', { id: 'generate-vars', class: 'secondary', onclick: () => generateVars([name]) }, 'Generate vars')),
    h('h2', {}, 'Roles'),
    machine.roles.length ? table(['instance', 'role', 'settings'], machine.roles.map((r) => [
      h('a', { href: `#/instance/${encodeURIComponent(r.instance)}` }, r.instance), r.role,
      h('code', {}, JSON.stringify((machine.settings[r.instance] || {})[r.role] || {}))])) : h('p', { class: 'muted' }, 'In no instance yet.'),
    h('h2', {}, 'Vars'),
    varsError ? errorBlock({ data: varsError }) : null,
    vars.length ? table(['generator', 'file', 'kind', 'status', 'value'], vars.map((v) => [
      v.generator, v.file, v.secret ? 'secret' : 'public',
      h('span', { class: v.exists ? 'ok' : 'bad' }, v.exists ? 'generated' : 'missing'),
      v.secret ? h('span', { class: 'muted' }, v.exists ? '(secret, not shown)' : '') : h('code', {}, v.value ?? '')])) : h('p', { class: 'muted' }, 'No vars.'),
    h('h2', {}, 'Generations'),
    generationsBox,
    h('h2', {}, 'Evaluated configuration'),
    ['files', 'units', 'users', 'groups', 'packages', 'firewall', 'generators', 'secrets', 'state'].map((key) => configSection(key, config[key])));
}

async function loadGenerations(name, box) {
  box.replaceChildren(h('p', { class: 'muted' }, 'Asking the machine…'));
  try {
    const { generations, currentEntry } = await api('GET', `/api/machines/${encodeURIComponent(name)}/generations`);
    const history = generations.history || [];
    box.replaceChildren(
      history.length ? table(['#', 'generation', 'time', 'action', ''], history.map((entry, i) => [
        String(entry.number), h('code', {}, entry.generation.slice(0, 12)), new Date(entry.time * 1000).toLocaleString(),
        `${entry.action}${entry.detail ? `: ${entry.detail}` : ''}`,
        i === currentEntry ? h('strong', { class: 'ok' }, 'current')
          : entry.action === 'failed' ? '' : h('button', { class: 'secondary', 'data-rollback': entry.number, onclick: () => rollback(name, String(entry.number), box) }, 'Roll back to this')])) : h('p', { class: 'muted' }, 'Never deployed.'));
  } catch (error) {
    box.replaceChildren(errorBlock(error));
  }
}

async function rollback(name, to, box) {
  box.prepend(h('p', { class: 'muted' }, `Rolling back to ${to}…`));
  try {
    const activation = await api('POST', `/api/machines/${encodeURIComponent(name)}/rollback`, { to });
    await loadGenerations(name, box);
    box.prepend(h('p', { class: 'ok', id: 'rolled-back' }, `Rolled back: now ${activation.generation.slice(0, 12)}`));
  } catch (error) {
    box.prepend(errorBlock(error));
  }
}

// ---------------------------------------------------------------- vars prompts

/** Asks for `prompts` in the dialog; the answers, or null when cancelled. Fields are
 * cleared afterwards: a hidden answer is never left in the page. */
function askPrompts(prompts) {
  const dialog = document.getElementById('prompts');
  const fields = document.getElementById('prompts-fields');
  const inputs = prompts.map((p) => {
    const label = (p.display && p.display.label) || p.prompt;
    const id = `prompt-${p.key}-${p.prompt}`.replace(/[^a-zA-Z0-9_-]/g, '_');
    const multiline = p.type.startsWith('multiline');
    const hidden = p.type.includes('hidden');
    const input = multiline
      ? h('textarea', { id, class: hidden ? 'masked' : '', required: true, autocomplete: 'off', 'data-prompt': p.prompt })
      : h('input', { id, type: hidden ? 'password' : 'text', required: true, autocomplete: hidden ? 'new-password' : 'off', 'data-prompt': p.prompt });
    return { p, input, element: h('div', { class: 'field' },
      h('label', { for: id }, label, ' ', h('span', { class: 'muted' }, `${p.machine || 'shared'} · ${p.generator}`)),
      input, p.description ? h('div', { class: 'help' }, p.description) : null) };
  });
  fields.replaceChildren(...inputs.map((i) => i.element));
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      let answers = null;
      if (dialog.returnValue === 'ok') {
        answers = {};
        for (const { p, input } of inputs) {
          (answers[p.key] ||= {})[p.prompt] = input.value;
        }
      }
      for (const { input } of inputs) input.value = '';
      fields.replaceChildren();
      resolve(answers);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

/** The answers the generators of `machines` need: {} when none, null when cancelled. */
async function answersFor(machines) {
  const prompts = await api('GET', `/api/vars/prompts?machines=${encodeURIComponent(machines.join(','))}`);
  return prompts.length ? askPrompts(prompts) : {};
}

async function generateVars(machines) {
  const status = h('p', { class: 'muted', id: 'vars-status' }, 'Generating…');
  try {
    const answers = await answersFor(machines);
    if (answers === null) return;
    main().prepend(status);
    const { generated } = await api('POST', '/api/vars/generate', { machines, answers });
    status.className = generated && generated.failed.length ? 'bad' : 'ok';
    status.textContent = generated
      ? `Generated ${generated.runs.length} generator runs${generated.failed.length ? `; failed: ${generated.failed.map((f) => `${f.generator}: ${f.error}`).join('; ')}` : ''}`
      : 'Nothing was missing.';
    setTimeout(() => route(), 0);
    // The status stays above the refreshed page.
    await new Promise((r) => setTimeout(r, 50));
    main().prepend(status);
  } catch (error) {
    main().prepend(errorBlock(error));
  }
}

// ---------------------------------------------------------------- deploys

async function startDeploy(machines, dryRun) {
  try {
    const answers = dryRun ? {} : await answersFor(machines);
    if (answers === null) return;
    const { id } = await api('POST', '/api/deploys', { machines, dryRun, answers });
    location.hash = `#/deploys/${id}`;
  } catch (error) {
    main().prepend(errorBlock(error));
  }
}

const STAGES = ['resolve', 'connect', 'upload', 'activate', 'confirm'];

/** Reads `path` as server-sent events, calling `onEvent` with each JSON event. */
async function streamEvents(path, onEvent) {
  const response = await fetch(path, { headers: { 'X-Clan-Key': localStorage.getItem(KEY) || '' }, credentials: 'same-origin' });
  if (!response.ok) throw new ApiError(response.status, null);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const lines = block.split('\n');
      const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      // A live event's id is when the server got it (Unix ms): its delay is kept for the
      // benchmark (bench/gui.sh).
      const id = lines.find((l) => l.startsWith('id:'));
      if (id) (window.clanEventDelays ||= []).push(Date.now() - Number(id.slice(3)));
      if (data) onEvent(JSON.parse(data));
    }
  }
}

function changesList(changes) {
  const entries = Object.entries(changes || {}).filter(([, v]) => v.length);
  if (!entries.length) return h('p', { class: 'muted' }, 'No changes.');
  return table(['change', 'what'], entries.map(([kind, items]) => [kind.replace(/([A-Z])/g, ' $1').toLowerCase(), items.join('\n')]));
}

async function deployView(id) {
  const record = await api('GET', `/api/deploys/${encodeURIComponent(id)}`);
  const status = h('span', { class: `status-${record.status}`, id: 'deploy-status' }, record.status);
  const cards = new Map();
  const log = h('pre', { id: 'deploy-log' });
  const notes = h('div');
  const machineCard = (machine) => {
    if (!cards.has(machine)) {
      const stages = new Map(STAGES.map((s) => [s, h('span', { class: 'stage' }, s)]));
      const card = {
        stages, outcome: h('span', { class: 'outcome' }), detail: h('div'), output: h('pre', { hidden: true }),
      };
      card.element = h('div', { class: 'card', 'data-deploy-machine': machine },
        h('div', { class: 'row' }, h('strong', {}, machine), h('span', { class: 'stages' }, [...stages.values()]), card.outcome),
        card.detail, card.output);
      cards.set(machine, card);
      machinesBox.append(card.element);
    }
    return cards.get(machine);
  };
  const machinesBox = h('div');
  const onEvent = (event) => {
    log.append(`${JSON.stringify(event)}\n`);
    if (event.kind === 'job-finished') {
      status.textContent = event.status;
      status.className = `status-${event.status}`;
      if (event.error) notes.append(errorBlock({ data: event.error }));
      return;
    }
    if (event.kind === 'generator') {
      notes.append(h('div', { class: 'muted' }, `vars: ${event.machine || 'shared'} ${event.generator} ${typeof event.step === 'string' ? event.step : JSON.stringify(event.step)}`));
      return;
    }
    if (event.kind !== 'deploy' || !event.machine) return;
    const card = machineCard(event.machine);
    const mark = (stage, cls) => {
      for (const s of STAGES) {
        const el = card.stages.get(s);
        if (s === stage) el.className = `stage ${cls}`;
        else if (cls === 'now' && STAGES.indexOf(s) < STAGES.indexOf(stage) && !el.className.includes('failed')) el.className = 'stage done';
      }
    };
    switch (event.event) {
      case 'stage': mark(event.stage, 'now'); break;
      case 'resolve': card.detail.append(h('div', { class: 'muted' }, `target ${event.target} (${event.source}), generation ${event.generation.slice(0, 12)}`)); break;
      case 'output': card.output.hidden = false; card.output.append(`${event.line}\n`); break;
      case 'message': card.detail.append(h('div', {}, event.message)); break;
      case 'dry-run': card.detail.append(h('div', {}, event.first_deploy || event.firstDeploy ? 'first deploy; ' : '', 'would change:'), changesList(event.changes)); break;
      case 'activate': card.detail.append(h('div', {}, 'activated:'), changesList(event.changes)); break;
      case 'done':
        for (const el of card.stages.values()) if (el.className.includes('now')) el.className = 'stage done';
        card.outcome.className = 'outcome ok';
        card.outcome.textContent = `${event.outcome} in ${event.elapsedMs} ms`;
        break;
      case 'failed':
        mark(event.stage, 'failed');
        card.outcome.className = 'outcome bad';
        card.outcome.textContent = `failed at ${event.stage}`;
        card.detail.append(errorBlock({ data: { error: event.error, causes: [], hint: event.hint } }));
        break;
      default: break;
    }
  };
  show(
    h('h1', {}, record.kind === 'dry-run' ? 'Dry run' : 'Deploy', ' ', status),
    h('p', { class: 'muted' }, `${record.machines.length ? record.machines.join(', ') : 'every machine'} · started ${time(record.started)}`),
    notes, machinesBox,
    h('details', {}, h('summary', {}, 'Event log (JSON, as `clan machines update --json`)'), log));
  await streamEvents(`/api/deploys/${encodeURIComponent(id)}/events`, onEvent);
  if (status.textContent === 'running') {
    // The stream ended early (a slow page): the record has every event.
    setTimeout(() => { if (location.hash === `#/deploys/${id}`) route(); }, 500);
  }
}

async function deploysView() {
  const history = await api('GET', '/api/deploys');
  show(h('h1', {}, 'Deploys'),
    h('div', { class: 'row' },
      h('button', { onclick: () => startDeploy([], false) }, 'Deploy every machine'),
      h('button', { class: 'secondary', onclick: () => startDeploy([], true) }, 'Dry run of every machine')),
    h('p'),
    history.length ? table(['started', 'kind', 'machines', 'status'], history.map((job) => [
      h('a', { href: `#/deploys/${job.id}` }, time(job.started)), job.kind,
      job.machines.length ? job.machines.join(', ') : 'all', h('span', { class: `status-${job.status}` }, job.status)])) : h('p', { class: 'muted' }, 'No deploys yet.'));
}

// ---------------------------------------------------------------- services and instances

async function servicesView() {
  const services = await api('GET', '/api/services');
  show(h('h1', {}, 'Services'), services.map((service) => h('div', { class: 'card', 'data-service': service.name },
    h('div', { class: 'row' }, h('strong', {}, service.name), h('span', { class: 'muted' }, service.origin),
      (service.manifest.categories || []).map((c) => h('span', { class: 'tag' }, c)),
      h('a', { class: 'button', href: `#/services/${encodeURIComponent(service.name)}/new` }, 'New instance')),
    h('p', {}, service.manifest.description || ''),
    table(['role', 'description', 'settings'], Object.entries(service.roles).map(([role, r]) => [role, r.description || '',
      Object.keys((r.interface && r.interface.properties) || {}).join(', ')])))));
}

/** Form fields for the JSON Schema `schema` (an object's properties, nested objects as
 * dotted keys). `collect()` returns the settings the user filled in, as [{key, value}]. */
function schemaFields(schema, prefix = '') {
  const fields = [];
  const elements = [];
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (prop.type === 'object' && prop.properties) {
      const nested = schemaFields(prop, key);
      fields.push(...nested.fields);
      elements.push(h('fieldset', {}, h('legend', {}, key), nested.elements));
      continue;
    }
    const id = `field-${key.replace(/[^a-zA-Z0-9_-]/g, '_')}-${Math.random().toString(36).slice(2, 7)}`;
    const placeholder = prop.default !== undefined ? `default: ${JSON.stringify(prop.default)}` : '';
    let input, read;
    if (Array.isArray(prop.enum)) {
      input = h('select', { id, 'data-key': key }, h('option', { value: '' }, placeholder || '(unset)'), prop.enum.map((v) => h('option', { value: JSON.stringify(v) }, String(v))));
      read = () => (input.value === '' ? undefined : JSON.parse(input.value));
    } else if (prop.type === 'boolean') {
      input = h('select', { id, 'data-key': key }, h('option', { value: '' }, placeholder || '(unset)'), h('option', { value: 'true' }, 'true'), h('option', { value: 'false' }, 'false'));
      read = () => (input.value === '' ? undefined : input.value === 'true');
    } else if (prop.type === 'integer' || prop.type === 'number') {
      input = h('input', { id, type: 'text', inputmode: 'numeric', placeholder, 'data-key': key });
      // Sent as typed: a number when it reads as one, else the text (the server says why not).
      read = () => (input.value.trim() === '' ? undefined : (Number.isFinite(Number(input.value)) ? Number(input.value) : input.value));
    } else if (prop.type === 'string') {
      input = h('input', { id, type: 'text', placeholder, 'data-key': key });
      read = () => (input.value === '' ? undefined : input.value);
    } else if (prop.type === 'array' && prop.items && prop.items.type === 'string') {
      input = h('textarea', { id, placeholder: placeholder || 'one per line', 'data-key': key });
      read = () => (input.value.trim() === '' ? undefined : input.value.split('\n').map((l) => l.trim()).filter(Boolean));
    } else {
      input = h('textarea', { id, placeholder: placeholder || 'JSON', 'data-key': key });
      read = () => { if (input.value.trim() === '') return undefined; try { return JSON.parse(input.value); } catch { return input.value; } };
    }
    const error = h('div', { class: 'field-error', hidden: true });
    elements.push(h('div', { class: 'field' }, h('label', { for: id }, key, required.has(name) ? ' *' : '', ' ', h('span', { class: 'muted' }, prop.type || 'json')),
      input, prop.description ? h('div', { class: 'help' }, prop.description) : null, error));
    fields.push({ key, input, read, error });
  }
  return { fields, elements, collect: () => fields.map((f) => ({ key: f.key, value: f.read() })).filter((s) => s.value !== undefined) };
}

/** Shows a failed edit: under the field the error names (`…settings.<key>`), else above
 * the form. */
function showEditError(error, roleForms, top) {
  for (const form of roleForms) for (const f of form.fields) { f.error.hidden = true; f.input.removeAttribute('aria-invalid'); }
  top.replaceChildren();
  const text = [error.data.error, ...(error.data.causes || [])].join('\n');
  let placed = false;
  for (const form of roleForms) {
    if (!text.includes(`roles.${form.role}.`)) continue;
    for (const f of form.fields) {
      if (text.includes(`settings.${f.key}\``) || text.includes(`settings.${f.key}.`)) {
        f.error.replaceChildren(h('span', {}, error.data.error.replace(/^.*?: `[^`]*`: /, ''), error.data.hint ? h('div', { class: 'hint' }, error.data.hint) : null));
        f.error.hidden = false;
        f.input.setAttribute('aria-invalid', 'true');
        placed = true;
      }
    }
  }
  if (!placed) top.replaceChildren(errorBlock(error));
}

function roleForm(role, definition, withMembers) {
  const settings = schemaFields((definition && definition.interface) || {});
  const members = withMembers ? h('input', { type: 'text', placeholder: 'machines or tag:TAG, comma-separated', 'data-members': role }) : null;
  return {
    role, fields: settings.fields, collect: settings.collect, members,
    element: h('fieldset', { class: 'card', 'data-role': role }, h('legend', {}, h('strong', {}, role), ' ', h('span', { class: 'muted' }, (definition && definition.description) || '')),
      members ? h('div', { class: 'field' }, h('label', {}, 'Members'), members) : null,
      settings.elements.length ? settings.elements : h('p', { class: 'muted' }, 'No settings.')),
  };
}

async function newInstanceView(serviceName) {
  const services = await api('GET', '/api/services');
  const service = services.find((s) => s.name === serviceName);
  if (!service) { show(errorBlock({ data: { error: `no service ${serviceName}` } })); return; }
  const name = h('input', { type: 'text', id: 'instance-name', required: true, value: serviceName });
  const forms = Object.entries(service.roles).map(([role, def]) => roleForm(role, def, true));
  const top = h('div');
  const submit = h('button', { type: 'submit', id: 'create-instance' }, 'Create instance');
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      const roles = forms.flatMap((f) => f.members.value.split(',').map((t) => t.trim()).filter(Boolean).map((target) => ({ role: f.role, target })));
      const settings = forms.flatMap((f) => f.collect().map((s) => ({ role: f.role, ...s })));
      try {
        await api('POST', '/api/instances', { name: name.value, service: serviceName, roles, settings });
        location.hash = `#/instance/${encodeURIComponent(name.value)}`;
      } catch (error) {
        showEditError(error, forms, top);
      } finally {
        submit.disabled = false;
      }
    },
  }, h('div', { class: 'field' }, h('label', { for: 'instance-name' }, 'Instance name'), name), forms.map((f) => f.element), top, submit);
  show(h('h1', {}, 'New ', serviceName, ' instance'), h('p', {}, service.manifest.description || ''), form);
}

async function instanceView(name) {
  const [data, services] = await Promise.all([fleet(true), api('GET', '/api/services')]);
  const instance = data.instances[name];
  if (!instance) { show(errorBlock({ data: { error: `no instance ${name}` } })); return; }
  const service = services.find((s) => s.name === instance.service) || { roles: {} };
  const top = h('div');
  const saved = h('p', { class: 'ok', id: 'saved', hidden: true });
  const forms = [];
  const roleCards = Object.entries(service.roles).map(([role, def]) => {
    const form = roleForm(role, def, false);
    forms.push(form);
    const members = (instance.roles || {})[role] || [];
    const add = h('input', { type: 'text', placeholder: 'machine or tag:TAG', 'data-add-member': role });
    const scope = h('select', { 'data-scope': role }, h('option', { value: '' }, `every ${role}`),
      [...new Set(data.machines.flatMap((m) => m.tags))].map((t) => h('option', { value: `tag:${t}` }, `tag ${t}`)),
      data.machines.map((m) => h('option', { value: m.name }, `machine ${m.name}`)));
    form.scope = scope;
    return h('div', {},
      h('div', { class: 'row' }, h('span', {}, 'members: ', members.join(', ') || 'none'), add,
        h('button', { type: 'button', class: 'secondary', onclick: async () => {
          try { await api('POST', `/api/instances/${encodeURIComponent(name)}/members`, { role, target: add.value.trim() }); route(); } catch (error) { top.replaceChildren(errorBlock(error)); }
        } }, 'Add')),
      h('div', { class: 'row' }, h('span', {}, 'settings for'), scope), form.element);
  });
  const submit = h('button', { type: 'submit', id: 'save-settings' }, 'Save settings');
  show(h('h1', {}, name, ' ', h('span', { class: 'muted' }, instance.service)), saved,
    h('form', {
      onsubmit: async (event) => {
        event.preventDefault();
        const settings = forms.flatMap((f) => f.collect().map((s) => ({ role: f.role, target: f.scope.value || null, ...s })));
        if (!settings.length) { top.replaceChildren(h('p', { class: 'muted' }, 'Nothing filled in.')); return; }
        submit.disabled = true;
        try {
          const { commit } = await api('POST', `/api/instances/${encodeURIComponent(name)}/settings`, { settings });
          showEditError({ data: { error: '', causes: [] } }, forms, top);
          top.replaceChildren();
          saved.textContent = `Saved and committed: ${commit}`;
          saved.hidden = false;
          performance.mark('settings-saved');
        } catch (error) {
          showEditError(error, forms, top);
        } finally {
          submit.disabled = false;
        }
      },
    }, roleCards, top, submit));
}

// ---------------------------------------------------------------- machines and clans

function newMachineView() {
  const input = (id, label, placeholder = '') => [h('label', { for: id }, label), h('input', { id, type: 'text', placeholder })];
  const top = h('div');
  show(h('h1', {}, 'Add a machine'), h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      const value = (id) => document.getElementById(id).value.trim();
      try {
        await api('POST', '/api/machines', {
          name: value('machine-name'), tags: value('machine-tags').split(',').map((t) => t.trim()).filter(Boolean),
          targetHost: value('machine-target') || null, description: value('machine-description') || null,
        });
        fleetCache = null;
        location.hash = `#/machine/${encodeURIComponent(value('machine-name'))}`;
      } catch (error) {
        top.replaceChildren(errorBlock(error));
      }
    },
  }, input('machine-name', 'Name', 'web01'), input('machine-tags', 'Tags', 'web, backup'),
  input('machine-target', 'Deploy target', 'root@203.0.113.4'), input('machine-description', 'Description'),
  h('p'), top, h('button', { type: 'submit', id: 'create-machine' }, 'Add machine')));
}

function newClanView() {
  const top = h('div');
  show(h('h1', {}, 'Create a clan'),
    h('p', {}, 'A clan is a git repository holding clan.toml; your age key and sops user are created with it.'),
    h('form', {
      class: 'card',
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api('POST', '/api/clan', { directory: document.getElementById('clan-directory').value.trim(), name: document.getElementById('clan-new-name').value.trim() || null });
          await start();
        } catch (error) {
          top.replaceChildren(errorBlock(error));
        }
      },
    }, h('label', { for: 'clan-directory' }, 'Directory (absolute path)'), h('input', { id: 'clan-directory', type: 'text', size: 50, required: true }),
    h('label', { for: 'clan-new-name' }, 'Name'), h('input', { id: 'clan-new-name', type: 'text', placeholder: 'from the directory' }),
    h('p'), top, h('button', { type: 'submit', id: 'create-clan' }, 'Create clan')));
}

// ---------------------------------------------------------------- routing

async function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [view, ...rest] = hash.split('/');
  for (const link of document.querySelectorAll('[data-nav]')) link.classList.toggle('active', link.dataset.nav === (view || 'fleet'));
  if (!session.clan) { newClanView(); return; }
  try {
    switch (view) {
      case '': case 'fleet': await fleetView(); break;
      case 'machine': await machineView(rest.join('/')); break;
      case 'services': if (rest[1] === 'new') await newInstanceView(rest[0]); else await servicesView(); break;
      case 'instance': await instanceView(rest.join('/')); break;
      case 'deploys': if (rest.length) await deployView(rest[0]); else await deploysView(); break;
      case 'new-machine': newMachineView(); break;
      default: show(h('p', {}, 'Nothing here. ', h('a', { href: '#/' }, 'Fleet')));
    }
  } catch (error) {
    show(errorBlock(error));
  }
  performance.mark(`view-${view || 'fleet'}`);
  document.body.dataset.view = view || 'fleet';
  // After the next frame: the view is painted.
  requestAnimationFrame(() => setTimeout(() => performance.mark(`painted-${view || 'fleet'}`), 0));
}

async function start() {
  try {
    session = await api('GET', '/api/session');
  } catch (error) {
    show(h('p', {}, 'This page needs the link `clan gui` printed (its token works once).'), errorBlock(error));
    return;
  }
  document.getElementById('clan-name').textContent = session.clan || 'no clan yet';
  await route();
}

document.getElementById('another-browser').addEventListener('click', async () => {
  const { token } = await api('POST', '/api/tokens');
  const url = `${location.origin}/?token=${token}`;
  main().prepend(h('div', { class: 'card' }, 'Open once, in the other browser: ', h('code', { id: 'another-url' }, url)));
});
window.addEventListener('hashchange', route);
start();
