"""The shipped walk-through and compose opt-in: the configs pass, the key script and `xds-control dev-token`
(real processes) make a token the configured JWKS verifies for the configured resource."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import yaml

from tests.support.procs import ROOT
from xds_control.auth import devtoken
from xds_control.auth.jwks import read_jwks
from xds_control.config import load_config

AUTH_SECTIONS = {"auth", "authorization", "rate_limit"}


def test_the_compose_opt_in_is_the_plain_config_plus_the_auth_sections() -> None:
    plain = {
        k: v for k, v in load_config(ROOT / "compose" / "config.yaml").model_dump().items() if k not in AUTH_SECTIONS
    }
    with_auth = load_config(ROOT / "compose" / "config.auth.yaml")
    assert with_auth.auth is not None and with_auth.authorization is not None
    assert {k: v for k, v in with_auth.model_dump().items() if k not in AUTH_SECTIONS} == plain  # same bootstrap
    override = yaml.safe_load((ROOT / "compose" / "docker-compose.auth.yml").read_text())
    base = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    assert set(override["services"]) <= set(base["services"])
    for name in ("control-plane", "aggregator"):
        assert "./config.auth.yaml:/etc/xds-control/config.yaml:ro" in override["services"][name]["volumes"]
    keys_mount = "./auth-keys:/etc/xds-control/keys:ro"
    assert keys_mount in override["services"]["control-plane"]["volumes"]
    assert with_auth.auth.issuers[0].jwks_file == "/etc/xds-control/keys/jwks.json"


def test_make_keys_and_dev_token_mint_a_token_the_gateway_would_accept(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    keys = tmp_path / "keys"
    made = subprocess.run(
        [str(ROOT / "examples" / "auth" / "make-keys.sh"), str(keys)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert (keys / devtoken.PRIVATE_KEY_FILE).stat().st_mode & 0o077 == 0  # the private key is the user's alone
    jwks = read_jwks(str(keys / "jwks.json"))  # public keys only (read_jwks refuses a private part)
    config = load_config(ROOT / "examples" / "auth" / "gateway.yaml")
    assert config.auth is not None
    minted = subprocess.run(
        [sys.executable, "-m", "xds_control.cli", "dev-token", "-c", str(ROOT / "examples" / "auth" / "gateway.yaml"),
         "--keys", str(keys), "--sub", "alice", "--groups", "ops,dev", "--scope", "mcp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    key = jwt.PyJWKSet.from_dict(json.loads(jwks)).keys[0]
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=config.auth_resource(),
                        issuer=config.auth.issuers[0].issuer)  # fmt: skip
    assert claims["sub"] == "alice" and claims["groups"] == ["ops", "dev"] and claims["scope"] == "mcp"
    assert claims["exp"] - claims["iat"] == 3600
    assert token not in minted.stderr
