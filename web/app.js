// ClawSocket web chat (SPEC §7): a chat page that speaks ClawSocket's WebSocket protocol.
//
// It connects by itself (the token comes from the URL fragment `#token=…` or the
// Account form and stays in this tab's sessionStorage), reconnects with back-off, and
// after every (re)connect reloads the open conversation: `chat.history` for what is
// stored, `chat.join` with `afterSeq` for a turn still running. The transcript is a
// list of items (user, member, answer, error) rebuilt from history and the live
// turns, keyed by messageId, so a reload or a replay never shows a message twice.
// Model output is Markdown rendered by marked and sanitized by DOMPurify into a DOM
// fragment on every update: no string from the network is ever assigned to innerHTML.
// Served under a Content-Security-Policy that allows only this origin.
(function () {
  'use strict';

  const WELCOME = 'Connected to WebSocket chat server';
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const HISTORY_LIMIT = 200;
  const THREADS_LIMIT = 100;
  const THREADS_REFRESH_MS = 400;
  const COPIED_MS = 1500;
  const STORE = {
    identity: 'clawsocket.identity',   // localStorage: senderId, senderName, groups
    token: 'clawsocket.token',         // sessionStorage: this tab's token
    open: 'clawsocket.open',           // sessionStorage: the open conversation
    pending: 'clawsocket.pending',     // sessionStorage: sent messages not answered yet
  };
  const SANITIZE = {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'option', 'iframe'],
    FORBID_ATTR: ['style'],
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    app: $('app'), sidebar: $('sidebar'), scrim: $('scrim'), newChat: $('newChat'),
    threadList: $('threadList'), threadsEmpty: $('threadsEmpty'), groupList: $('groupList'),
    groupForm: $('groupForm'), groupId: $('groupId'), account: $('account'),
    accountSummary: $('accountSummary'), accountForm: $('accountForm'), accountHint: $('accountHint'),
    senderName: $('senderName'), senderId: $('senderId'), token: $('token'),
    chat: $('chat'), menuToggle: $('menuToggle'), chatTitle: $('chatTitle'), status: $('status'),
    transcript: $('transcript'), emptyState: $('emptyState'), announcer: $('announcer'),
    composer: $('composer'), attachments: $('attachments'), attach: $('attach'), fileInput: $('fileInput'),
    message: $('message'), stop: $('stop'), send: $('send'), composeHint: $('composeHint'),
  };

  const state = {
    ws: null,
    wanted: true,            // connect and stay connected (false after close 4401)
    open: false,             // socket open and welcomed
    attempt: 0,              // reconnect attempts since the last welcome
    reconnectTimer: null,
    me: { senderId: '', senderName: '', token: '', groups: [] },
    threads: [],             // the user's conversations (chat.threads)
    threadsTimer: null,
    view: null,              // the open conversation
    turnCtx: new Map(),      // messageId of a turn this page started -> its conversation's ctxKey
    uploads: [],             // attachments of the message being written
    mediaUrls: new Map(),    // mediaId -> Promise of {url, type}
  };

  // ---------- small helpers ----------
  function newId(prefix) {
    const random = window.crypto && crypto.randomUUID ? crypto.randomUUID()
      : Date.now().toString(36) + Math.random().toString(36).slice(2);
    return prefix + random;
  }
  function text(value) { return typeof value === 'string' ? value : ''; }
  function element(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }
  function button(label, className, onClick, ariaLabel) {
    const node = element('button', className, label);
    node.type = 'button';
    if (ariaLabel) node.setAttribute('aria-label', ariaLabel);
    node.addEventListener('click', onClick);
    return node;
  }
  function readJson(storage, key, fallback) {
    try { return JSON.parse(storage.getItem(key)) || fallback; } catch (e) { return fallback; }
  }
  function writeJson(storage, key, value) {
    try { storage.setItem(key, JSON.stringify(value)); } catch (e) { /* storage off: keep going */ }
  }
  function ctxFields(ctx) {
    const fields = {};
    if (ctx.groupId) fields.groupId = ctx.groupId;
    if (ctx.threadId) fields.threadId = ctx.threadId;
    return fields;
  }
  function ctxKey(ctx) { return (ctx.groupId || '') + '\u0000' + (ctx.threadId || ''); }
  // The tail a session key ends with for this conversation (identity.rs: `:` and `%` escaped).
  function escapeId(id) { return id.replace(/%/g, '%25').replace(/:/g, '%3A'); }
  function isSessionOf(sessionKey, ctx) {
    if (typeof sessionKey !== 'string') return false;
    const thread = ctx.threadId ? ':thread:' + escapeId(ctx.threadId) : '';
    if (ctx.groupId) return sessionKey.endsWith(':websocket:group:' + escapeId(ctx.groupId) + thread);
    if (!sessionKey.includes(':websocket:direct:')) return false;
    return thread ? sessionKey.endsWith(thread) : !sessionKey.includes(':thread:');
  }
  function seconds(ms) {
    const s = Math.max(1, Math.ceil(ms / 1000));
    return s < 90 ? s + ' s' : Math.ceil(s / 60) + ' min';
  }
  function announce(words) { el.announcer.textContent = words; }
  function copyText(value, feedback) {
    const done = () => {
      const before = feedback.textContent;
      feedback.textContent = 'Copied';
      setTimeout(() => { feedback.textContent = before; }, COPIED_MS);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done, () => fallbackCopy(value) && done());
    } else if (fallbackCopy(value)) {
      done();
    }
  }
  function fallbackCopy(value) {
    const area = element('textarea');
    area.value = value;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  // ---------- identity and storage ----------
  function loadIdentity() {
    const saved = readJson(localStorage, STORE.identity, {});
    state.me.senderId = text(saved.senderId) || 'guest-' + Math.random().toString(36).slice(2, 8);
    state.me.senderName = text(saved.senderName);
    state.me.groups = Array.isArray(saved.groups) ? saved.groups.filter((g) => typeof g === 'string') : [];
    state.me.token = tokenFromFragment() || text(sessionStorage.getItem(STORE.token));
    saveIdentity();
  }
  // `#token=…` in the address: kept in this tab, then removed from the address bar.
  function tokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ''));
    const token = fragment.get('token');
    if (!token) return '';
    fragment.delete('token');
    const rest = fragment.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return token;
  }
  function saveIdentity() {
    writeJson(localStorage, STORE.identity,
      { senderId: state.me.senderId, senderName: state.me.senderName, groups: state.me.groups });
    try {
      if (state.me.token) sessionStorage.setItem(STORE.token, state.me.token);
      else sessionStorage.removeItem(STORE.token);
    } catch (e) { /* storage off */ }
    el.senderId.value = state.me.senderId;
    el.senderName.value = state.me.senderName;
    el.token.value = state.me.token;
  }
  function pendingOf(ctx) { return readJson(sessionStorage, STORE.pending, {})[ctxKey(ctx)] || []; }
  function setPending(ctx, list) {
    const all = readJson(sessionStorage, STORE.pending, {});
    if (list.length) all[ctxKey(ctx)] = list; else delete all[ctxKey(ctx)];
    writeJson(sessionStorage, STORE.pending, all);
  }
  function forgetPending(ctx, messageId) {
    setPending(ctx, pendingOf(ctx).filter((p) => p.messageId !== messageId));
  }

  // ---------- connection ----------
  function websocketUrl() {
    const meta = document.querySelector('meta[name="clawsocket-ws-path"]');
    const path = (meta && meta.content) || '/ws';
    const params = new URLSearchParams();
    if (state.me.senderId) params.set('senderId', state.me.senderId);
    if (state.me.senderName) params.set('senderName', state.me.senderName);
    if (state.me.token) params.set('token', state.me.token);
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path + '?' + params;
  }
  function setStatus(name, words) {
    el.status.dataset.state = name;
    el.status.textContent = words;
  }
  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    let ws;
    try { ws = new WebSocket(websocketUrl()); } catch (e) { setStatus('failed', 'Cannot connect'); return; }
    state.ws = ws;
    state.open = false;
    setStatus(state.attempt ? 'reconnecting' : 'connecting', state.attempt ? 'Reconnecting…' : 'Connecting…');
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      if (typeof event.data === 'string') onFrame(event.data);
      else if (event.data && event.data.text) event.data.text().then((t) => { if (ws === state.ws) onFrame(t); });
    };
    ws.onclose = (event) => { if (ws === state.ws) onClosed(event); };
  }
  function onClosed(event) {
    state.ws = null;
    state.open = false;
    refreshComposer();
    if (event.code === 4401) {
      state.wanted = false;
      setStatus('failed', 'Sign-in needed');
      el.account.open = true;
      el.accountHint.textContent = 'The server needs a valid token (' + (event.reason || 'refused') + '). Enter one and connect.';
      openSidebar();
      el.token.focus();
      return;
    }
    if (!state.wanted) { setStatus('disconnected', 'Offline'); return; }
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, state.attempt));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    state.attempt += 1;
    setStatus('reconnecting', 'Reconnecting in ' + (delay / 1000).toFixed(1) + ' s');
    state.reconnectTimer = setTimeout(connect, delay);
  }
  function reconnectNow() {
    state.wanted = true;
    state.attempt = 0;
    const ws = state.ws;
    state.ws = null;
    if (ws) { try { ws.close(1000, 'reconnect'); } catch (e) { /* already closed */ } }
    connect();
  }
  function sendFrame(frame) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  // ---------- inbound frames ----------
  function onFrame(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch (e) { return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    const handler = HANDLERS[msg.type];
    if (!handler) return;
    try {
      handler(msg);
    } catch (e) {
      // A frame of a shape this page does not expect is skipped; the next one works.
      console.error('clawsocket: could not show a ' + msg.type + ' frame', e);
    }
  }
  const HANDLERS = {
    'chat.response': (msg) => (isWelcome(msg) ? onWelcome(msg) : onResponse(msg)),
    'chat.typing': onTyping,
    'chat.stream': (msg) => onAnswerPart(msg, (answer) => { answer.text += text(msg.content); }),
    'chat.reasoning': (msg) => onAnswerPart(msg, (answer) => { answer.reasoning += text(msg.content); }),
    'chat.tool': (msg) => onAnswerPart(msg, (answer) => addTool(answer, msg)),
    'chat.media': (msg) => onAnswerPart(msg, (answer) => answer.media.push(mediaOfAttachment(msg))),
    'chat.error': onError,
    'chat.message': onMemberMessage,
    'chat.history': onHistory,
    'chat.joined': onJoined,
    'chat.threads': onThreads,
    'chat.titled': onTitled,
    'chat.deleted': onDeleted,
  };
  function isWelcome(msg) { return msg.content === WELCOME && msg.connectionId !== undefined; }

  function onWelcome(msg) {
    state.open = true;
    state.attempt = 0;
    if (typeof msg.senderId === 'string') state.me.senderId = msg.senderId;
    el.accountHint.textContent = '';
    el.accountSummary.textContent = 'Account: ' + (msg.senderName || state.me.senderName || state.me.senderId);
    setStatus('connected', msg.authenticated ? 'Connected' : 'Connected as ' + state.me.senderId);
    refreshComposer();
    requestThreads();
    loadView(state.view);
  }

  // The open conversation's items, for frames that name a session or a known turn.
  function viewFor(msg) {
    const view = state.view;
    if (msg.messageId !== undefined && typeof msg.messageId !== 'string') return null;
    const owner = msg.messageId ? state.turnCtx.get(msg.messageId) : undefined;
    if (owner !== undefined && owner !== ctxKey(view.ctx)) return null;
    if (msg.sessionKey !== undefined && !isSessionOf(msg.sessionKey, view.ctx)) return null;
    return view;
  }
  function onTyping(msg) {
    const view = viewFor(msg);
    if (!view || !msg.messageId) return;
    const answer = answerFor(view, msg.messageId);
    if (!answer.done) setRunning(view, msg.messageId);
  }
  function onAnswerPart(msg, apply) {
    const view = viewFor(msg);
    if (!view || !msg.messageId) return;
    const answer = answerFor(view, msg.messageId);
    if (answer.done) return;
    const seq = typeof msg.seq === 'number' ? msg.seq : null;
    if (seq !== null && seq <= answer.lastSeq) return;   // a replayed part already shown
    apply(answer);
    if (seq !== null) answer.lastSeq = seq;
    setRunning(view, msg.messageId);
    scheduleRender(answer);
  }
  function onResponse(msg) {
    const view = viewFor(msg);
    if (!view || !msg.messageId) return;
    const answer = answerFor(view, msg.messageId);
    answer.text = text(msg.content);
    if (typeof msg.reasoning === 'string') answer.reasoning = msg.reasoning;
    if (Array.isArray(msg.toolCalls) && !answer.tools.length) msg.toolCalls.forEach((call) => addTool(answer, call));
    if (Array.isArray(msg.attachments) && !answer.media.length) answer.media = attachmentsOf(msg.attachments);
    answer.usage = msg.usage && typeof msg.usage === 'object' ? msg.usage : null;
    answer.finishReason = text(msg.finishReason);
    finishAnswer(view, answer);
    announce('Answer: ' + answer.text.slice(0, 500));
    scheduleThreadsRefresh();
  }
  function onError(msg) {
    const view = viewFor(msg);
    if (!view) return;
    const answer = msg.messageId ? view.answers.get(msg.messageId) : null;
    if (msg.code === 'aborted' && msg.messageId) {
      const stopped = answer || answerFor(view, msg.messageId);
      stopped.stopped = true;
      finishAnswer(view, stopped);
      return;
    }
    if (answer && !answer.done) {
      answer.failed = true;
      if (!answer.text && !answer.reasoning && !answer.tools.length) removeItem(view, answer);
      else finishAnswer(view, answer);
    }
    if (msg.messageId) finishTurn(view, msg.messageId);
    addItem(view, { kind: 'error', code: text(msg.code), words: errorWords(msg), detail: text(msg.error) });
  }
  function onMemberMessage(msg) {
    const view = state.view;
    if (!view.ctx.groupId || msg.groupId !== view.ctx.groupId || text(msg.threadId) !== text(view.ctx.threadId)) return;
    if (msg.messageId && view.byId.has('u:' + msg.messageId)) return;
    addItem(view, { kind: 'member', messageId: text(msg.messageId), content: text(msg.content),
      senderName: text(msg.senderName) || text(msg.senderId) || 'Member', mediaIds: mediaIdsOf(msg) });
  }
  function onJoined(msg) {
    const view = viewFor(msg);
    if (!view || !msg.inFlight) return;
    const answer = answerFor(view, msg.inFlight);
    if (!answer.done) setRunning(view, msg.inFlight);
  }

  // ---------- conversations (sidebar) ----------
  function requestThreads() { sendFrame({ type: 'chat.threads', limit: THREADS_LIMIT }); }
  function scheduleThreadsRefresh() {
    clearTimeout(state.threadsTimer);
    state.threadsTimer = setTimeout(requestThreads, THREADS_REFRESH_MS);
  }
  function onThreads(msg) {
    if (msg.groupId || !Array.isArray(msg.sessions)) return;
    state.threads = msg.sessions.filter((s) => s && typeof s === 'object' && !s.groupId);
    renderThreads();
  }
  function onTitled(msg) {
    if (msg.groupId) return;
    const entry = state.threads.find((t) => text(t.threadId) === text(msg.threadId));
    if (entry) entry.title = text(msg.title);
    else scheduleThreadsRefresh();
    renderThreads();
  }
  function onDeleted(msg) {
    if (msg.groupId) return;
    state.threads = state.threads.filter((t) => text(t.threadId) !== text(msg.threadId));
    renderThreads();
    const ctx = state.view.ctx;
    if (!ctx.groupId && text(ctx.threadId) === text(msg.threadId)) openConversation(newChatCtx());
  }
  function titleOf(ctx) {
    if (ctx.groupId) return '# ' + ctx.groupId + (ctx.threadId ? ' · ' + ctx.threadId : '');
    const entry = state.threads.find((t) => text(t.threadId) === text(ctx.threadId));
    return entry && entry.title ? entry.title : 'New chat';
  }
  function renderThreads() {
    const current = state.view.ctx;
    el.threadList.replaceChildren(...state.threads.map((entry) => threadRow(entry, current)));
    el.threadsEmpty.hidden = state.threads.length > 0;
    el.groupList.replaceChildren(...state.me.groups.map((groupId) => groupRow(groupId, current)));
    el.chatTitle.textContent = titleOf(current);
    document.title = el.chatTitle.textContent + ' · ClawSocket';
  }
  function threadRow(entry, current) {
    const ctx = entry.threadId ? { threadId: String(entry.threadId) } : {};
    const title = text(entry.title) || 'Untitled chat';
    const row = element('li', 'thread-item');
    const isCurrent = !current.groupId && text(current.threadId) === text(entry.threadId);
    row.classList.toggle('current', isCurrent);
    const open = button(title, 'thread-open', () => openConversation(ctx));
    if (isCurrent) open.setAttribute('aria-current', 'page');
    if (entry.inFlight) open.textContent = title + ' …';
    row.append(open, button('✎', 'icon rename', () => startRename(row, entry), 'Rename "' + title + '"'));
    if (entry.threadId) {
      row.append(button('✕', 'icon delete', () => deleteThread(entry, title), 'Delete "' + title + '"'));
    }
    return row;
  }
  function startRename(row, entry) {
    const input = element('input');
    input.value = text(entry.title);
    input.maxLength = 200;
    input.setAttribute('aria-label', 'New title');
    const finish = (save) => {
      const title = input.value.replace(/\s+/g, ' ').trim();
      if (save && title && title !== entry.title) {
        sendFrame(Object.assign({ type: 'chat.title', title: title }, entry.threadId ? { threadId: entry.threadId } : {}));
        entry.title = title;
      }
      renderThreads();
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') { event.preventDefault(); finish(true); }
      if (event.key === 'Escape') { event.preventDefault(); event.stopPropagation(); finish(false); }
    });
    input.addEventListener('blur', () => finish(true));
    row.replaceChildren(input);
    input.focus();
    input.select();
  }
  function deleteThread(entry, title) {
    if (!window.confirm('Delete "' + title + '"? This cannot be undone.')) return;
    sendFrame({ type: 'chat.delete', threadId: entry.threadId });
  }
  function groupRow(groupId, current) {
    const row = element('li', 'thread-item');
    const isCurrent = current.groupId === groupId;
    row.classList.toggle('current', isCurrent);
    const open = button('# ' + groupId, 'thread-open', () => openConversation({ groupId: groupId }));
    if (isCurrent) open.setAttribute('aria-current', 'page');
    row.append(open, button('✕', 'icon', () => forgetGroup(groupId), 'Remove group ' + groupId + ' from the list'));
    return row;
  }
  function forgetGroup(groupId) {
    state.me.groups = state.me.groups.filter((g) => g !== groupId);
    saveIdentity();
    if (state.view.ctx.groupId === groupId) openConversation(newChatCtx());
    else renderThreads();
  }
  function newChatCtx() { return { threadId: newId('chat-') }; }

  // ---------- the open conversation ----------
  function newView(ctx) {
    return {
      ctx: ctx,
      items: [],                 // in display order
      byId: new Map(),           // 'u:'+id or 'a:'+id -> item
      answers: new Map(),        // messageId -> answer item
      running: null,             // messageId of the running turn
      regenerating: new Map(),   // new turn's messageId -> the answer it replaces
    };
  }
  function openConversation(ctx) {
    const previous = state.view;
    if (previous && ctxKey(previous.ctx) === ctxKey(ctx)) { closeSidebar(); return; }
    if (previous && state.open) sendFrame(Object.assign({ type: 'chat.leave' }, ctxFields(previous.ctx)));
    state.view = newView(ctx);
    writeJson(sessionStorage, STORE.open, ctx);
    renderTranscript(state.view);
    renderThreads();
    refreshComposer();
    closeSidebar();
    loadView(state.view);
  }
  // Reads the conversation again: the running turn's parts after the last one shown,
  // and its stored history (never twice: parts carry seq, items messageIds).
  function loadView(view) {
    pendingOf(view.ctx).forEach((p) => {
      if (!view.byId.has('u:' + p.messageId)) {
        addItem(view, { kind: 'user', messageId: p.messageId, content: text(p.content), mediaIds: mediaIdsOf(p) });
      }
    });
    if (!state.open) return;
    // Joined first: a group's history is only for connections that joined it.
    const live = [...view.answers.values()].filter((a) => !a.done);
    const afterSeq = live.length ? Math.min(...live.map((a) => a.lastSeq)) : 0;
    sendFrame(Object.assign({ type: 'chat.join', afterSeq: afterSeq }, ctxFields(view.ctx)));
    sendFrame(Object.assign({ type: 'chat.history', limit: HISTORY_LIMIT }, ctxFields(view.ctx)));
  }
  function onHistory(msg) {
    const view = state.view;
    if (!isSessionOf(msg.sessionKey, view.ctx) || !Array.isArray(msg.messages)) return;
    const stored = msg.messages.filter((m) => m && typeof m === 'object').map(itemOfEntry).filter(Boolean);
    const storedIds = new Set(stored.map(itemKey).filter(Boolean));
    // Keep what history does not have: a running answer, a message still waiting, a
    // stopped or failed turn (those are not stored), an error line.
    const live = view.items.filter((item) => !storedIds.has(itemKey(item)));
    view.items = [];
    view.byId.clear();
    view.answers.clear();
    stored.concat(live).forEach((item) => indexItem(view, item));
    view.items.forEach((item) => {
      if (item.kind === 'user' && storedIds.has('a:' + item.messageId)) forgetPending(view.ctx, item.messageId);
    });
    renderTranscript(view);
    refreshComposer();
  }
  function itemOfEntry(entry) {
    const messageId = text(entry.messageId);
    if (entry.role === 'assistant') {
      const answer = newAnswer(messageId);
      answer.text = text(entry.content);
      answer.reasoning = text(entry.reasoning);
      if (Array.isArray(entry.toolCalls)) entry.toolCalls.forEach((call) => addTool(answer, call));
      if (Array.isArray(entry.attachments)) answer.media = attachmentsOf(entry.attachments);
      answer.usage = entry.usage && typeof entry.usage === 'object' ? entry.usage : null;
      answer.finishReason = text(entry.finishReason);
      answer.done = true;
      return answer;
    }
    if (entry.role !== 'user') return null;
    const mine = !entry.senderId || entry.senderId === state.me.senderId;
    return { kind: mine ? 'user' : 'member', messageId: messageId, content: text(entry.content),
      senderName: text(entry.senderName) || text(entry.senderId), mediaIds: mediaIdsOf(entry) };
  }
  function itemKey(item) {
    if (!item.messageId) return null;
    return (item.kind === 'answer' ? 'a:' : 'u:') + item.messageId;
  }
  function indexItem(view, item) {
    view.items.push(item);
    const key = itemKey(item);
    if (key) view.byId.set(key, item);
    if (item.kind === 'answer' && item.messageId) view.answers.set(item.messageId, item);
  }
  function addItem(view, item) {
    indexItem(view, item);
    if (view !== state.view) return;
    const stick = nearBottom();
    el.emptyState.hidden = true;
    el.transcript.appendChild(renderItem(item));
    refreshRegenerate(view);
    scrollDown(stick);
  }
  function removeItem(view, item) {
    view.items = view.items.filter((other) => other !== item);
    const key = itemKey(item);
    if (key) view.byId.delete(key);
    if (item.kind === 'answer') view.answers.delete(item.messageId);
    if (item.el) item.el.remove();
  }
  function newAnswer(messageId) {
    return { kind: 'answer', messageId: messageId, text: '', reasoning: '', tools: [], media: [], usage: null,
      finishReason: '', lastSeq: 0, done: false, stopped: false, failed: false, el: null, renderQueued: false };
  }
  // The answer item of a turn, created (in place of the answer it regenerates, if any).
  function answerFor(view, messageId) {
    const known = view.answers.get(messageId);
    if (known) return known;
    const answer = newAnswer(messageId);
    const replaced = view.regenerating.get(messageId);
    if (replaced && view.items.includes(replaced)) {
      view.items[view.items.indexOf(replaced)] = answer;
      view.answers.delete(replaced.messageId);
      view.byId.delete('a:' + replaced.messageId);
      view.answers.set(messageId, answer);
      view.byId.set('a:' + messageId, answer);
      if (replaced.el) replaced.el.replaceWith(renderItem(answer));
      return answer;
    }
    addItem(view, answer);
    announce('The agent is answering');
    return answer;
  }
  function addTool(answer, call) {
    if (!call || typeof call !== 'object') return;
    const id = text(call.toolCallId) || text(call.id);
    const known = answer.tools.find((t) => id && t.id === id);
    const tool = known || { id: id, name: '', arguments: '', phase: 'call', result: '' };
    tool.name = text(call.name) || tool.name;
    tool.arguments = text(call.arguments) || tool.arguments;
    tool.phase = text(call.phase) || tool.phase;
    tool.result = text(call.result) || tool.result;
    if (!known) answer.tools.push(tool);
  }
  function setRunning(view, messageId) {
    view.running = messageId;
    refreshComposer();
  }
  function finishTurn(view, messageId) {
    forgetPending(view.ctx, messageId);
    if (view.running === messageId) view.running = null;
    refreshComposer();
  }
  function finishAnswer(view, answer) {
    answer.done = true;
    view.regenerating.delete(answer.messageId);
    finishTurn(view, answer.messageId);
    scheduleRender(answer);
    refreshRegenerate(view);
  }

  // ---------- rendering ----------
  function nearBottom() {
    const t = el.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
  }
  function scrollDown(stick) { if (stick) el.transcript.scrollTop = el.transcript.scrollHeight; }
  function renderTranscript(view) {
    el.transcript.replaceChildren(el.emptyState, ...view.items.map(renderItem));
    el.emptyState.hidden = view.items.length > 0;
    refreshRegenerate(view);
    scrollDown(true);
  }
  function renderItem(item) {
    if (item.kind === 'answer') { renderAnswer(item); return item.el; }
    if (!item.el) item.el = ITEM_RENDERERS[item.kind](item);
    return item.el;
  }
  const ITEM_RENDERERS = {
    user: (item) => messageBubble(item, 'user', 'You'),
    member: (item) => messageBubble(item, 'member', item.senderName),
    error: (item) => {
      const node = element('div', 'msg error', item.words);
      node.setAttribute('role', 'alert');
      node.dataset.code = item.code;
      if (item.detail && item.detail !== item.words) node.append(element('div', 'small', item.detail));
      return node;
    },
  };
  function messageBubble(item, className, who) {
    const node = element('div', 'msg ' + className);
    if (item.messageId) node.dataset.messageId = item.messageId;
    node.append(element('div', 'who', who), element('div', 'body', item.content));
    if (item.mediaIds.length) node.append(mediaList(item.mediaIds.map((id) => ({ mediaId: id }))));
    return node;
  }
  function scheduleRender(answer) {
    if (answer.renderQueued) return;
    answer.renderQueued = true;
    requestAnimationFrame(() => {
      answer.renderQueued = false;
      const stick = nearBottom();
      renderAnswer(answer);
      refreshRegenerate(state.view);
      scrollDown(stick);
    });
  }
  // Builds or rebuilds one answer: reasoning (folded), tool cards, the Markdown text,
  // attachments, then its actions (copy, regenerate) and usage.
  function renderAnswer(answer) {
    if (!answer.el) {
      answer.el = element('article', 'msg agent');
      answer.el.setAttribute('aria-label', 'Answer');
    }
    const node = answer.el;
    node.dataset.messageId = answer.messageId;
    node.dataset.seq = String(answer.lastSeq);
    node.classList.toggle('streaming', !answer.done);
    node.classList.toggle('done', answer.done);
    const parts = [];
    if (answer.reasoning) parts.push(reasoningBlock(answer));
    answer.tools.forEach((tool) => parts.push(toolCard(tool)));
    const body = element('div', 'answer');
    renderMarkdown(body, answer.text);
    parts.push(body);
    if (answer.media.length) parts.push(mediaList(answer.media));
    if (answer.stopped) parts.push(element('div', 'stopped-note', 'Stopped'));
    if (answer.finishReason === 'length') parts.push(element('div', 'stopped-note', 'The answer was cut off at its length limit.'));
    if (answer.done) parts.push(answerActions(answer));
    node.replaceChildren(...parts);
  }
  function reasoningBlock(answer) {
    const details = element('details', 'reasoning');
    const open = answer.el.querySelector('details.reasoning');
    details.open = Boolean(open && open.open);
    details.append(element('summary', '', answer.done ? 'Reasoning' : 'Reasoning…'),
      element('div', 'reasoning-text', answer.reasoning));
    return details;
  }
  function toolCard(tool) {
    const card = element('div', 'tool-card');
    card.dataset.phase = tool.phase;
    card.append(element('span', 'tool-icon', '⚙'), element('span', 'tool-name', tool.name || 'tool'));
    const args = element('code', '', tool.arguments);
    args.title = tool.arguments;
    card.append(args, element('span', 'muted small', tool.phase === 'call' ? 'called' : tool.phase));
    if (tool.result) card.append(element('div', 'small', tool.result));
    return card;
  }
  function answerActions(answer) {
    const bar = element('div', 'msg-actions');
    const copy = button('Copy', 'copy-answer', () => copyText(answer.text, copy), 'Copy the answer');
    bar.append(copy);
    const regenerate = button('Regenerate', 'regenerate', () => regenerateAnswer(answer), 'Regenerate the answer');
    regenerate.hidden = true;
    bar.append(regenerate);
    if (answer.usage && typeof answer.usage.totalTokens === 'number') {
      const usage = element('span', 'usage', (answer.usage.estimated ? '~' : '') + answer.usage.totalTokens + ' tokens');
      usage.title = 'prompt ' + answer.usage.promptTokens + ', answer ' + answer.usage.completionTokens +
        (answer.usage.estimated ? ' (estimated)' : '');
      bar.append(usage);
    }
    return bar;
  }
  // Only the last answer of a conversation with no running turn, to one's own message,
  // can be regenerated, and only a stored one (a stopped or failed turn is not stored:
  // the server would regenerate the answer before it).
  function refreshRegenerate(view) {
    if (view !== state.view) return;
    const turns = view.items.filter((item) => item.kind === 'answer' || item.kind === 'user' || item.kind === 'member');
    const last = turns[turns.length - 1];
    const question = turns[turns.length - 2];
    const allowed = last && last.kind === 'answer' && last.done && !last.stopped && !last.failed && !view.running &&
      (!question || question.kind === 'user');
    view.items.forEach((item) => {
      const control = item.kind === 'answer' && item.el && item.el.querySelector('.regenerate');
      if (control) control.hidden = !(allowed && item === last);
    });
  }
  function renderMarkdown(container, source) {
    if (!window.marked || !window.DOMPurify) { container.textContent = source; return; }
    let fragment;
    try {
      fragment = DOMPurify.sanitize(marked.parse(source, { gfm: true, breaks: true, async: false }), SANITIZE);
    } catch (e) {
      container.textContent = source;
      return;
    }
    fragment.querySelectorAll('a[href]').forEach((link) => {
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
    });
    fragment.querySelectorAll('pre').forEach(decorateCodeBlock);
    container.replaceChildren(fragment);
  }
  function decorateCodeBlock(pre) {
    const code = pre.querySelector('code');
    const language = code && /language-([\w+#.-]+)/.exec(code.className);
    const block = element('div', 'code-block');
    const head = element('div', 'code-head', language ? language[1] : 'code');
    const copy = button('Copy code', 'copy-code', () => copyText(pre.textContent, copy));
    head.append(copy);
    pre.replaceWith(block);
    block.append(head, pre);
  }

  // ---------- media (attachments) ----------
  function mediaIdsOf(source) {
    return Array.isArray(source.mediaIds) ? source.mediaIds.filter((id) => typeof id === 'string') : [];
  }
  function attachmentsOf(list) {
    return list.filter((item) => item && typeof item === 'object').map(mediaOfAttachment);
  }
  function mediaOfAttachment(attachment) {
    return { mediaId: text(attachment.mediaId), url: text(attachment.url), type: text(attachment.mediaType),
      name: text(attachment.name) };
  }
  // Credentials for /media: the token as a header (never in a URL), or who we are when
  // the server has no sign-in; a group's media also names the group.
  function mediaRequest(path, extraQuery) {
    const params = new URLSearchParams(extraQuery || {});
    if (!state.me.token && state.me.senderId) params.set('senderId', state.me.senderId);
    if (state.view.ctx.groupId) params.set('groupId', state.view.ctx.groupId);
    const query = params.toString();
    return { url: path + (query ? '?' + query : ''),
      headers: state.me.token ? { Authorization: 'Bearer ' + state.me.token } : {} };
  }
  function isSameOriginMedia(url) { return /^\/media\//.test(url) || url.startsWith(location.origin + '/media/'); }
  function fetchMedia(media) {
    const key = media.mediaId || media.url;
    if (!state.mediaUrls.has(key)) {
      const path = media.mediaId ? '/media/' + encodeURIComponent(media.mediaId) : new URL(media.url, location.href).pathname;
      const request = mediaRequest(path);
      state.mediaUrls.set(key, fetch(request.url, { headers: request.headers, credentials: 'same-origin' })
        .then((response) => (response.ok ? response.blob() : Promise.reject(new Error('HTTP ' + response.status))))
        .then((blob) => ({ url: URL.createObjectURL(blob), type: blob.type })));
    }
    return state.mediaUrls.get(key);
  }
  function mediaList(list) {
    const ul = element('ul', 'media-list');
    list.forEach((media) => ul.append(mediaItem(media)));
    return ul;
  }
  function mediaItem(media) {
    const li = element('li', 'media-item');
    const name = media.name || (media.mediaId ? 'attachment' : media.url);
    if (media.url && !isSameOriginMedia(media.url)) {
      const link = element('a', '', name);
      if (/^https?:\/\//i.test(media.url)) { link.href = media.url; link.target = '_blank'; link.rel = 'noopener noreferrer'; }
      li.append(link);
      return li;
    }
    li.append(element('span', 'muted small', 'Loading ' + name + '…'));
    fetchMedia(media).then((file) => li.replaceChildren(localMediaNode(file, name)),
      () => li.replaceChildren(element('span', 'muted small', name + ' is no longer available')));
    return li;
  }
  function localMediaNode(file, name) {
    if (file.type.startsWith('image/')) {
      const img = element('img');
      img.src = file.url;
      img.alt = name;
      return img;
    }
    const link = element('a', 'file', name);
    link.href = file.url;
    link.download = name;
    return link;
  }

  // ---------- uploads (POST /media) ----------
  function addFiles(files) {
    [...files].forEach((file) => {
      const upload = { file: file, name: file.name || 'pasted file', status: 'uploading', progress: 0,
        mediaId: '', error: '', xhr: null, preview: file.type.startsWith('image/') ? URL.createObjectURL(file) : '' };
      state.uploads.push(upload);
      startUpload(upload);
    });
    renderUploads();
  }
  function startUpload(upload) {
    const request = mediaRequest('/media', { name: upload.name });
    const xhr = new XMLHttpRequest();
    upload.xhr = xhr;
    xhr.open('POST', request.url);
    Object.entries(request.headers).forEach(([name, value]) => xhr.setRequestHeader(name, value));
    xhr.setRequestHeader('Content-Type', upload.file.type || 'application/octet-stream');
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) { upload.progress = event.loaded / event.total; renderUploads(); }
    };
    xhr.onload = () => {
      const answer = readJsonText(xhr.responseText);
      if (xhr.status === 201 && typeof answer.mediaId === 'string') {
        upload.status = 'done';
        upload.mediaId = answer.mediaId;
        if (upload.preview) state.mediaUrls.set(answer.mediaId, Promise.resolve({ url: upload.preview, type: upload.file.type }));
      } else {
        upload.status = 'failed';
        upload.error = uploadErrorWords(xhr.status, answer, upload.name);
      }
      renderUploads();
    };
    xhr.onerror = () => {
      upload.status = 'failed';
      upload.error = 'Uploading "' + upload.name + '" failed: check the connection and try again.';
      renderUploads();
    };
    xhr.send(upload.file);
  }
  function readJsonText(body) {
    try { const value = JSON.parse(body); return value && typeof value === 'object' ? value : {}; } catch (e) { return {}; }
  }
  function uploadErrorWords(status, answer, name) {
    const quoted = '"' + name + '"';
    if (answer.code === 'quota_exceeded') {
      return answer.retryAfterMs ? 'You have reached your upload limit; try again in ' + seconds(answer.retryAfterMs) + '.'
        : 'Your space for attachments is full, so ' + quoted + ' was not attached.';
    }
    if (status === 413) return quoted + ' is too large to attach.';
    if (status === 415) return quoted + ' is a kind of file this chat does not take (images, PDF and plain text usually are).';
    if (status === 401 || status === 403) return 'You are not signed in, so files cannot be attached.';
    if (status === 404 || status === 405) return 'This server does not take attachments.';
    return 'Uploading ' + quoted + ' failed' + (answer.error ? ': ' + answer.error : '.');
  }
  function removeUpload(upload) {
    if (upload.status === 'uploading' && upload.xhr) upload.xhr.abort();
    state.uploads = state.uploads.filter((u) => u !== upload);
    renderUploads();
    el.message.focus();
  }
  function renderUploads() {
    el.attachments.replaceChildren(...state.uploads.map(uploadChip));
    const failed = state.uploads.find((u) => u.status === 'failed');
    el.composeHint.textContent = failed ? failed.error : '';
    refreshComposer();
  }
  function uploadChip(upload) {
    const chip = element('li', 'chip ' + upload.status);
    if (upload.preview) {
      const img = element('img');
      img.src = upload.preview;
      img.alt = '';
      chip.append(img);
    }
    chip.append(element('span', 'chip-name', upload.name));
    if (upload.status === 'uploading') {
      const bar = element('progress');
      bar.max = 1;
      bar.value = upload.progress;
      bar.setAttribute('aria-label', 'Uploading ' + upload.name);
      chip.append(bar);
    }
    chip.append(button('✕', 'icon', () => removeUpload(upload), 'Remove ' + upload.name));
    return chip;
  }

  // ---------- outbound ----------
  function refreshComposer() {
    const view = state.view;
    const uploading = state.uploads.some((u) => u.status === 'uploading');
    el.send.disabled = !state.open || uploading;
    el.stop.hidden = !(view && view.running && state.open);
  }
  function sendMessage() {
    const content = el.message.value.trim();
    const ready = state.uploads.filter((u) => u.status === 'done');
    if (!content && !ready.length) return;
    if (state.uploads.some((u) => u.status === 'uploading')) {
      el.composeHint.textContent = 'Wait until the attachments are uploaded.';
      return;
    }
    const view = state.view;
    const messageId = newId('web-');
    const frame = Object.assign({ type: 'chat.send', content: content, messageId: messageId }, ctxFields(view.ctx));
    if (view.ctx.groupId) frame.chatType = 'group';
    if (ready.length) frame.mediaIds = ready.map((u) => u.mediaId);
    if (!sendFrame(frame)) {
      el.composeHint.textContent = 'Not connected: the message was not sent. It will be possible again once reconnected.';
      return;
    }
    const mediaIds = frame.mediaIds || [];
    state.turnCtx.set(messageId, ctxKey(view.ctx));
    setPending(view.ctx, pendingOf(view.ctx).concat([{ messageId: messageId, content: content, mediaIds: mediaIds }]));
    addItem(view, { kind: 'user', messageId: messageId, content: content, mediaIds: mediaIds });
    setRunning(view, messageId);
    scrollDown(true);
    el.message.value = '';
    autoGrow();
    state.uploads = [];
    renderUploads();
  }
  function stopAnswer() {
    const view = state.view;
    if (!view.running) return;
    sendFrame(Object.assign({ type: 'chat.abort', messageId: view.running }, ctxFields(view.ctx)));
  }
  function regenerateAnswer(answer) {
    const view = state.view;
    const newMessageId = newId('web-');
    view.regenerating.set(newMessageId, answer);
    state.turnCtx.set(newMessageId, ctxKey(view.ctx));
    if (!sendFrame(Object.assign({ type: 'chat.regenerate', newMessageId: newMessageId }, ctxFields(view.ctx)))) return;
    setRunning(view, newMessageId);
    refreshRegenerate(view);
  }
  function errorWords(msg) {
    const words = ERROR_WORDS[msg.code];
    if (typeof words === 'function') return words(msg);
    return words || text(msg.error) || 'Something went wrong.';
  }
  const ERROR_WORDS = {
    quota_exceeded: (msg) => 'You have reached a usage limit' +
      (typeof msg.retryAfterMs === 'number' ? '; you can continue in ' + seconds(msg.retryAfterMs) + '.' : '.'),
    rate_limited: 'You are sending messages too quickly; wait a moment and try again.',
    session_busy: 'Too many messages are waiting in this conversation; wait for the answers first.',
    agent_unavailable: 'The agent cannot be reached right now. Try again in a moment.',
    agent_timeout: 'The agent took too long to answer.',
    agent_error: 'The agent could not answer.',
    forbidden: 'You are not allowed to do that in this conversation.',
    not_found: 'That conversation or message no longer exists.',
    shutting_down: 'The server is restarting; send the message again in a moment.',
    invalid_message: 'The server could not take that message.',
    media_forbidden: 'That attachment cannot be used.',
    internal: 'Something went wrong on the server; the answer was not saved.',
  };

  // ---------- layout and keyboard ----------
  function openSidebar() {
    el.app.classList.add('sidebar-open');
    el.menuToggle.setAttribute('aria-expanded', 'true');
    el.scrim.hidden = false;
  }
  function closeSidebar() {
    if (!el.app.classList.contains('sidebar-open')) return;
    el.app.classList.remove('sidebar-open');
    el.menuToggle.setAttribute('aria-expanded', 'false');
    el.scrim.hidden = true;
  }
  function autoGrow() {
    el.message.style.height = 'auto';
    el.message.style.height = Math.min(el.message.scrollHeight + 2, 240) + 'px';
  }
  function wire() {
    el.composer.addEventListener('submit', (event) => { event.preventDefault(); sendMessage(); });
    el.message.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) { event.preventDefault(); sendMessage(); }
    });
    el.message.addEventListener('input', autoGrow);
    el.message.addEventListener('paste', (event) => {
      const files = event.clipboardData && event.clipboardData.files;
      if (files && files.length) { event.preventDefault(); addFiles(files); }
    });
    document.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      if (state.view.running) { event.preventDefault(); stopAnswer(); } else closeSidebar();
    });
    el.stop.addEventListener('click', stopAnswer);
    el.attach.addEventListener('click', () => el.fileInput.click());
    el.fileInput.addEventListener('change', () => { addFiles(el.fileInput.files); el.fileInput.value = ''; });
    el.chat.addEventListener('dragover', (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes('Files')) return;
      event.preventDefault();
      el.chat.classList.add('dragging');
    });
    el.chat.addEventListener('dragleave', (event) => {
      if (!el.chat.contains(event.relatedTarget)) el.chat.classList.remove('dragging');
    });
    el.chat.addEventListener('drop', (event) => {
      el.chat.classList.remove('dragging');
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    });
    el.newChat.addEventListener('click', () => { openConversation(newChatCtx()); el.message.focus(); });
    el.menuToggle.addEventListener('click', () => (el.app.classList.contains('sidebar-open') ? closeSidebar() : openSidebar()));
    el.scrim.addEventListener('click', closeSidebar);
    el.groupForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const groupId = el.groupId.value.trim();
      if (!groupId) return;
      if (!state.me.groups.includes(groupId)) state.me.groups.push(groupId);
      saveIdentity();
      el.groupId.value = '';
      openConversation({ groupId: groupId });
    });
    el.accountForm.addEventListener('submit', (event) => {
      event.preventDefault();
      state.me.senderId = el.senderId.value.trim() || state.me.senderId;
      state.me.senderName = el.senderName.value.trim();
      state.me.token = el.token.value;
      saveIdentity();
      el.account.open = false;
      reconnectNow();
    });
  }

  function restoredCtx() {
    const saved = readJson(sessionStorage, STORE.open, null);
    if (!saved || typeof saved !== 'object') return newChatCtx();
    const ctx = {};
    if (typeof saved.groupId === 'string' && saved.groupId) ctx.groupId = saved.groupId;
    if (typeof saved.threadId === 'string' && saved.threadId) ctx.threadId = saved.threadId;
    return ctx;
  }

  loadIdentity();
  wire();
  openConversation(restoredCtx());
  connect();

  // For tests and debugging: drop() closes the socket as a network failure would.
  window.clawsocket = {
    state: state,
    drop: () => { if (state.ws) state.ws.close(4000, 'simulated drop'); },
  };
})();
