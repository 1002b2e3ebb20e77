"""Triton Python-based backend ``python_supernet``: a thin shim over supernet.serving, for any
supernet family.

The model config names the family and the weights in its parameters (``family``, ``weights``);
loading fails, with a message naming the weights file and what differs, if the weights are of
another family, do not fit their architecture, or the config's input/output dims are not the
family's. Several supernets are served side by side as several model_repository entries.

Per request the ``subnet`` parameter picks the subnet (default: the most accurate Pareto subnet).
The requests of one execute() are grouped by subnet; each group runs one batched forward.
A bad request gets its own INVALID_ARG error; the rest of the batch is served.
"""
import json
import os
import sys

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from supernet.config_check import check_config  # noqa: E402
from supernet.serving import BadRequest, SupernetRunner, subnet_parameter  # noqa: E402

_HERE = os.path.dirname(os.path.realpath(__file__))


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        weights = _param(config, "weights", os.path.join(_HERE, "weights", "supernet.pt"))
        if not os.path.isabs(weights):
            weights = os.path.join(_HERE, weights)
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        threads = int(_param(config, "torch_threads", "0"))
        if threads > 0:
            import torch
            torch.set_num_threads(threads)
        # "subnet" pins the model to one subnet (fixed baselines); "exported" serves a subnet
        # exported as its own weights file instead of the supernet (a relative path is taken from
        # the model's folder; Triton passes that folder as args["model_repository"]).
        exported = _param(config, "exported", "")
        if exported and not os.path.isabs(exported):
            exported = os.path.join(args["model_repository"], exported)
        self.runner = SupernetRunner(weights, device, pinned=_param(config, "subnet", "") or None,
                                     exported=exported or None, family=_param(config, "family", "") or None)
        check_config(config, self.runner.input_spec, self.runner.output_spec, exported or weights)
        self.actuations = pb_utils.MetricFamily(
            name="supernet_subnet_actuations_total",
            description="Batched forwards run per subnet (one per subnet group in an execute call)",
            kind=pb_utils.MetricFamily.COUNTER)
        self.served = pb_utils.MetricFamily(
            name="supernet_subnet_requests_total",
            description="Requests answered per subnet",
            kind=pb_utils.MetricFamily.COUNTER)
        self._metrics = {}
        self.runner.warm_up()
        pb_utils.Logger.log_info(
            f"{self.name}: {self.runner.family} supernet {self.runner.sha256[:12]} on {device}, "
            f"{len(self.runner.accuracy)} subnets, default {self.runner.default_subnet}"
            + (f", pinned to {self.runner.pinned.name}" if self.runner.pinned else ""))

    def _count(self, subnet, requests):
        if subnet not in self._metrics:
            labels = {"model": self.name, "subnet": subnet}
            self._metrics[subnet] = (self.actuations.Metric(labels=labels), self.served.Metric(labels=labels))
        act, srv = self._metrics[subnet]
        act.increment(1)
        srv.increment(requests)

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # subnet name -> (cfg, [(request index, input array)])
        for i, request in enumerate(requests):
            if request.is_cancelled():
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED))
                continue
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, self.runner.input_spec.name)
                arr = self.runner.check_input(None if tensor is None else tensor.as_numpy())
                cfg = self.runner.resolve(subnet_parameter(request.parameters()))
            except BadRequest as e:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
                continue
            groups.setdefault(cfg.name, (cfg, []))[1].append((i, arr))
        for name, (cfg, items) in groups.items():
            try:
                result = self.runner.run(cfg, [a for _, a in items])
            except Exception as e:  # a failed forward fails its group only, never silently
                for i, _ in items:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"forward of subnet {name} failed: {e}",
                                                   pb_utils.TritonError.INTERNAL))
                continue
            batch = len(result.logits)
            info = self.runner.info_rows(cfg, result.logits, result.infer_ms, batch)
            start = 0
            for i, arr in items:
                n = len(arr)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(self.runner.output_spec.name, result.logits[start:start + n]),
                    pb_utils.Tensor("INFO", info[start:start + n])])
                start += n
            self._count(name, len(items))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info(f"{self.name}: unloading")
