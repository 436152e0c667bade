// jms audit web: the live page. The vendored asciinema player shows the
// session through its eventsource driver; a second EventSource on the same
// stream keeps the plain text (#live-text) and says when it is over
// (#live-status). `window.jmsLive` exposes both to tests.
(function () {
  "use strict";

  var container = document.getElementById("live-player");
  var status = document.getElementById("live-status");
  var text = document.getElementById("live-text");
  if (!container) {
    return;
  }
  var src = container.getAttribute("data-src");
  var player = null;
  if (window.AsciinemaPlayer) {
    player = window.AsciinemaPlayer.create(
      { driver: "eventsource", url: src },
      container,
      { autoPlay: true, fit: "width" }
    );
  }
  // Escape sequences out, for the plain text.
  var ansi = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r/g;
  function append(data) {
    if (text) {
      text.textContent += data.replace(ansi, "");
    }
  }
  var events = new EventSource(src);
  events.onopen = function () {
    status.textContent = "Live";
  };
  events.onmessage = function (message) {
    var event = JSON.parse(message.data);
    if (Array.isArray(event)) {
      append(event[2]);
    } else if (event && typeof event.init === "string") {
      text.textContent = "";
      append(event.init);
    }
  };
  events.addEventListener("end", function (message) {
    var reason = "";
    try {
      reason = JSON.parse(message.data).reason || "";
    } catch (e) {}
    status.textContent = "The session ended" + (reason ? ": " + reason : ".");
    status.setAttribute("data-ended", "1");
    events.close();
  });
  events.onerror = function () {
    if (status.getAttribute("data-ended") !== "1") {
      status.textContent = "Reconnecting…";
    }
  };
  var form = document.getElementById("terminate-form");
  if (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm("Terminate this session? The user is disconnected.")) {
        e.preventDefault();
      }
    });
  }
  window.jmsLive = { player: player, events: events };
})();
