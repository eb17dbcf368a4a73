"""The README's Python and litellm examples run as written against the real binary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid

from conftest import REPO_ROOT, Sidecar
from fake_llm import FakeLLM, Reply


def readme_example(marker: str) -> str:
    """The first ```python block after marker in the repository's README."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(marker)
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert m, f"no python example after {marker!r}"
    return m.group(1)


def run(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_python_example(sidecar: Sidecar) -> None:
    code = readme_example("**Python**")
    assert "localhost:4320" in code and '"c1"' in code
    cid = uuid.uuid4().hex
    out = run(code.replace("localhost:4320", sidecar.target).replace('"c1"', f'"{cid}"'))
    u = sidecar.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 1200 and u.agent == "my-agent"
    assert float(out) == u.cost_usd  # what the example printed is the ledger's cost


def test_litellm_example(sidecar: Sidecar) -> None:
    code = readme_example("**litellm**")
    assert "AgentmeterCallback()" in code
    fake = FakeLLM().start()
    try:
        fake.script("gpt-4o", [Reply(prompt_tokens=33, completion_tokens=3)])
        cid = uuid.uuid4().hex
        call = textwrap.dedent(f"""
            litellm.completion(model="openai/gpt-4o", api_base="{fake.base_url}/v1", api_key="k",
                               messages=[{{"role": "user", "content": "hi"}}],
                               metadata={{"conversation_id": "{cid}", "llm_service": "agent"}})
            """)
        # The callback's own client finds the sidecar through AGENTMETER_TARGET and is flushed at exit.
        run(code + call, env={"AGENTMETER_TARGET": sidecar.target, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    finally:
        fake.stop()
    u = sidecar.usage(cid)
    assert u is not None and u.calls == 1 and u.tokens.input == 33 and u.tokens.output == 3
