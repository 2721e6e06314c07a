"""`membot run` as a process: Discord and Slack in one process, on one runtime, with the scheduler.

The real discord.py client dials the Discord stand-in's gateway, the real bolt app takes signed
HTTP requests from Slack's stand-in; a DM on each platform reaches that person's own agent and
the reply goes back through its own platform. SIGTERM stops both cleanly (exit 0).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.discord_standin import TOKEN, DiscordStandIn, message
from tests.fake_openai import FakeOpenAI
from tests.slack_standin import BOT_TOKEN, SECRET, StandIn, callback, dm
from tests.test_discord import ANN
from tests.test_discord import environment as discord_environment
from tests.test_slack import accepts, free_port, http_post, wait_for
from tests.test_terminal_chat import answering, query


def test_membot_run_serves_discord_and_slack_in_one_process_and_stops_on_sigterm(tmp_path: Path):
    port = free_port()
    with FakeOpenAI(answering) as fake, DiscordStandIn() as discord, StandIn() as slack:
        env = discord_environment(
            fake,
            discord,
            tmp_path,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=slack.url,
            MEMBOT_HTTP_PORT=str(port),
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "run"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: discord.connected and accepts(port), proc)
            direct = message(discord.dm_channel_of(ANN["id"]), ANN, "hello from discord", guild=False)
            discord.dispatch("MESSAGE_CREATE", direct)
            assert http_post(port, callback(dm("U1", "hello from slack", "1700000201.000100"), "EvR1")) == 200
            wait_for(lambda: discord.posts and slack.posted(), proc)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    log = err.decode(errors="replace")
    assert proc.returncode == 0, log
    assert "membot is running: discord, slack" in log and "membot stopped" in log
    assert "Traceback" not in log and TOKEN not in log and BOT_TOKEN not in log
    assert [p["json"]["content"] for p in discord.posts] == ["answer to: hello from discord"]
    assert [p["text"] for p in slack.posted()] == ["answer to: hello from slack"]
    accounts = query(tmp_path, "SELECT platform, platform_user_id FROM identities ORDER BY platform")
    assert [a[0] for a in accounts] == ["discord", "slack"]  # two people, two agents
