"""The command line of ``vllm serve`` in vLLM v0.11.0 (the pinned image vllm/vllm-openai:v0.11.0),
for the flags this project renders: each flag's kind (a value, one of fixed choices, or a switch
without a value) as v0.11.0's argument parser declares it, so a test can parse the rendered args
the way vLLM would and name every flag it would refuse.

Source: the v0.11.0 release wheel (vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl, sha256
3861c75ff2b12e24f6d179ff5c084d791b42ded8675d76c8706697c79f68cd62, commit f71952c1c):

- vllm/config/model.py: ``RunnerOption = Literal["auto", "generate", "pooling", "draft"]``,
  ``ConvertType = Literal["none", "embed", "classify", "reward"]`` (``ConvertOption`` adds
  ``auto``), fields ``model``, ``runner``, ``convert``, ``quantization``, ``max_model_len``,
  ``served_model_name``, ``pooler_config`` (a JSON PoolerConfig; ``override_pooler_config`` is
  deprecated there);
- vllm/model_executor/layers/quantization/__init__.py: ``QuantizationMethods`` (the choices of
  ``--quantization``; the ones the stack config admits are listed below);
- vllm/engine/arg_utils.py: ``EngineArgs`` (``gpu_memory_utilization``, ``tensor_parallel_size``,
  ``structured_outputs_config``, a JSON StructuredOutputsConfig) and ``get_kwargs``, which makes a
  ``bool`` field a ``--x/--no-x`` switch (``argparse.BooleanOptionalAction``) and a ``Literal``
  field a choice; ``AsyncEngineArgs.add_cli_args`` adds ``--disable-log-requests``
  (BooleanOptionalAction, deprecated in favour of ``--enable-log-requests`` but still parsed);
- vllm/entrypoints/openai/cli_args.py: ``FrontendArgs`` (``host``, ``port``, ``ssl_keyfile``,
  ``ssl_certfile``, ``ssl_ca_certs``, ``ssl_cert_reqs`` an int, ``enable_auto_tool_choice`` a bool,
  ``tool_call_parser``, ``chat_template``), parsed with the same ``get_kwargs``.

Not the real parser (it imports torch and CUDA libraries, which this project does not install):
a flag the program starts to render must be added here from the same release's source.
"""

from __future__ import annotations

import json

RUNNER_OPTIONS = ("auto", "generate", "pooling", "draft")
CONVERT_OPTIONS = ("auto", "none", "embed", "classify", "reward")
# the QuantizationMethods of v0.11.0 that infra/config.py admits (all of them are in that Literal)
QUANTIZATION = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8")

VALUE = "value"
SWITCH = "switch"
JSON = "json"
FLAGS: dict[str, str | tuple[str, ...]] = {
    "--model": VALUE,
    "--served-model-name": VALUE,
    "--host": VALUE,
    "--port": VALUE,
    "--runner": RUNNER_OPTIONS,
    "--convert": CONVERT_OPTIONS,
    "--pooler-config": JSON,
    "--quantization": QUANTIZATION,
    "--max-model-len": VALUE,
    "--gpu-memory-utilization": VALUE,
    "--tensor-parallel-size": VALUE,
    "--disable-log-requests": SWITCH,
    "--ssl-certfile": VALUE,
    "--ssl-keyfile": VALUE,
    "--ssl-ca-certs": VALUE,
    "--ssl-cert-reqs": VALUE,
    "--enable-auto-tool-choice": SWITCH,
    "--tool-call-parser": VALUE,
    "--chat-template": VALUE,
    "--structured-outputs-config": JSON,
}


def parse(args: list[str]) -> dict[str, str | bool]:
    """The rendered args as vLLM v0.11.0 would take them: ``{flag: value}`` (True for a switch).
    Raises ValueError naming what its parser would refuse: an unknown flag, a flag given twice, a
    value missing or outside the flag's choices, a JSON flag whose value is not a JSON object."""
    parsed: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        kind = FLAGS.get(flag)
        if kind is None:
            raise ValueError(f"{flag}: not a flag of vllm serve v0.11.0 (or not yet in this double)")
        if flag in parsed:
            raise ValueError(f"{flag}: given twice")
        if kind == SWITCH:
            parsed[flag] = True
            i += 1
            continue
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            raise ValueError(f"{flag}: expects a value")
        value = args[i + 1]
        if isinstance(kind, tuple) and value not in kind:
            raise ValueError(f"{flag}: invalid choice, choose from {', '.join(kind)}")
        if kind == JSON and not isinstance(json.loads(value), dict):
            raise ValueError(f"{flag}: expects a JSON object")
        parsed[flag] = value
        i += 2
    return parsed
