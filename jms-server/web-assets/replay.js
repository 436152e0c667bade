// jms audit web: the replay page. Plays the session's asciicast with the
// vendored asciinema player (no resource from another site). The start
// moment comes from `#t=SECONDS` or `?t=SECONDS` (the command search links
// here with it); the controls below the player add seek by seconds and
// playback speed. `window.jmsReplay` exposes the player to tests.
(function () {
  "use strict";

  var container = document.getElementById("player");
  if (!container || !window.AsciinemaPlayer) {
    return;
  }
  var src = container.getAttribute("data-src");
  var clock = document.getElementById("clock");
  var speedSelect = document.getElementById("speed");
  var seekInput = document.getElementById("seek-to");

  function startFromLocation() {
    var hash = /(?:^#|&)t=([0-9]+(?:\.[0-9]+)?)/.exec(window.location.hash);
    if (hash) {
      return parseFloat(hash[1]);
    }
    var query = /[?&]t=([0-9]+(?:\.[0-9]+)?)/.exec(window.location.search);
    return query ? parseFloat(query[1]) : 0;
  }

  function format(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) {
      return "--:--";
    }
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var rest = s % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h > 0 ? h + ":" + two(m) : m) + ":" + two(rest);
  }

  var player = null;
  var playing = false;

  function create(at, speed, autoPlay) {
    if (player) {
      player.dispose();
    }
    container.innerHTML = "";
    // No `startAt`: a player made with one loses the screen before that
    // moment on a later seek (asciinema-player 3.18). Seeking a player made
    // at 0 keeps the whole screen.
    var options = {
      speed: speed,
      autoPlay: autoPlay,
      preload: true,
      fit: "width",
      controls: true,
      terminalFontFamily: "'DejaVu Sans Mono', ui-monospace, Menlo, Consolas, monospace"
    };
    player = window.AsciinemaPlayer.create(src, container, options);
    if (at > 0) {
      player.seek(at);
    }
    playing = autoPlay;
    var set = function (value) {
      return function () { playing = value; render(); };
    };
    player.addEventListener("play", set(true));
    player.addEventListener("playing", set(true));
    player.addEventListener("pause", set(false));
    player.addEventListener("ended", set(false));
    window.jmsReplay.player = player;
  }

  function seek(seconds) {
    var target = Math.max(0, seconds);
    var duration = player.getDuration();
    if (typeof duration === "number" && target > duration) {
      target = duration;
    }
    return player.seek(target);
  }

  window.jmsReplay = {
    player: null,
    seek: seek,
    currentTime: function () { return player.getCurrentTime(); },
    duration: function () { return player.getDuration(); },
    isPlaying: function () { return playing; }
  };

  create(startFromLocation(), 1, false);

  document.getElementById("play-pause").addEventListener("click", function () {
    if (playing) {
      player.pause();
    } else {
      player.play();
    }
  });
  document.getElementById("back-10").addEventListener("click", function () {
    seek(player.getCurrentTime() - 10);
  });
  document.getElementById("forward-10").addEventListener("click", function () {
    seek(player.getCurrentTime() + 10);
  });
  document.getElementById("seek-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var value = parseFloat(seekInput.value);
    if (isFinite(value)) {
      seek(value);
    }
  });
  speedSelect.addEventListener("change", function () {
    // The player takes its speed at creation: recreate it where it was.
    var at = player.getCurrentTime() || 0;
    create(at, parseFloat(speedSelect.value) || 1, playing);
  });
  window.addEventListener("hashchange", function () {
    seek(startFromLocation());
  });

  function render() {
    if (!player) {
      return;
    }
    clock.textContent = format(player.getCurrentTime()) + " / " + format(player.getDuration());
    document.getElementById("play-pause").textContent = playing ? "Pause" : "Play";
  }

  setInterval(render, 250);
})();
