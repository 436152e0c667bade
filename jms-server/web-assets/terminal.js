// The engineers' web terminal (/terminal): xterm.js over a WebSocket to the
// server, which runs an ordinary bastion session (jms_server::portal::terminal).
// Copy and paste follow the grant's `copy` and `paste` actions; a dropped
// socket says so and offers to reconnect (a new session).
(function () {
  "use strict";
  const el = document.getElementById("terminal");
  if (!el) {
    return;
  }
  const status = document.getElementById("terminal-status");
  const again = document.getElementById("reconnect");
  const mayCopy = el.dataset.copy === "true";
  const mayPaste = el.dataset.paste === "true";
  const term = new Terminal({ cursorBlink: true, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  // For the tests and for people: the screen's text.
  window.jmsTerminal = term;
  window.jmsScreen = function () {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
      lines.push(buffer.getLine(i).translateToString(true));
    }
    return lines.join("\n");
  };

  let ws = null;
  function say(text) {
    status.textContent = text;
  }
  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
    }
  }

  term.onData(function (data) {
    send({ type: "input", data: data });
  });
  term.onResize(function (size) {
    send({ type: "resize", cols: size.cols, rows: size.rows });
  });
  window.addEventListener("resize", function () {
    fit.fit();
  });

  // Copy only with the grant's `copy` (capture phase: before xterm's own).
  el.addEventListener(
    "copy",
    function (e) {
      if (!mayCopy) {
        e.preventDefault();
        e.stopPropagation();
        say("copy is not allowed on this account");
      }
    },
    true
  );
  // Paste only with `paste`: sent as a paste message the server checks too.
  el.addEventListener(
    "paste",
    function (e) {
      e.preventDefault();
      e.stopPropagation();
      if (!mayPaste) {
        say("paste is not allowed on this account");
        return;
      }
      let text = (e.clipboardData && e.clipboardData.getData("text/plain")) || "";
      text = text.replace(/\r?\n/g, "\r");
      if (term.modes.bracketedPasteMode) {
        text = "\x1b[200~" + text + "\x1b[201~";
      }
      if (text) {
        send({ type: "paste", data: text });
      }
    },
    true
  );

  function connect() {
    again.hidden = true;
    say("connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({
      asset: el.dataset.asset,
      account: el.dataset.account,
      cols: String(term.cols),
      rows: String(term.rows),
    });
    ws = new WebSocket(scheme + "://" + location.host + "/terminal/ws?" + query);
    ws.binaryType = "arraybuffer";
    let ended = null;
    ws.onopen = function () {
      say("connected");
      term.focus();
    };
    ws.onmessage = function (e) {
      if (typeof e.data === "string") {
        const message = JSON.parse(e.data);
        if (message.type === "closed") {
          ended = message.message;
        } else if (message.type === "notice") {
          say(message.message);
        }
        return;
      }
      term.write(new Uint8Array(e.data));
    };
    ws.onclose = function () {
      const why = ended || "the connection to the server dropped";
      term.write("\r\n\x1b[33m[" + why + "; press Reconnect for a new session]\x1b[0m\r\n");
      say("disconnected: " + why);
      again.hidden = false;
      ws = null;
    };
  }
  again.addEventListener("click", connect);
  connect();
})();
