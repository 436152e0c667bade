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
    var badge = document.querySelector(".replay-head .badge.online");
    if (badge) {
      badge.className = "badge ended";
      badge.textContent = "ended";
    }
    var button = document.getElementById("terminate");
    if (button) {
      button.disabled = true;
    }
  });
  events.onerror = function () {
    if (status.getAttribute("data-ended") !== "1") {
      status.textContent = "Reconnecting…";
    }
  };
  // Terminate without leaving the page: the stream then shows the end and
  // its reason. (Without script the form posts and comes back here.)
  var form = document.getElementById("terminate-form");
  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!window.confirm("Terminate this session? The user is disconnected.")) {
        return;
      }
      var button = document.getElementById("terminate");
      button.disabled = true;
      var body = new URLSearchParams(new FormData(form));
      fetch(form.action, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (response) {
          if (response.ok) {
            if (status.getAttribute("data-ended") !== "1") {
              status.textContent = "Terminating…";
            }
          } else {
            button.disabled = false;
            status.textContent = "Terminate failed (" + response.status + ")";
          }
        })
        .catch(function () {
          button.disabled = false;
          status.textContent = "Terminate failed: the server did not answer";
        });
    });
  }
  window.jmsLive = { player: player, events: events };
})();
