"""The study's networks: a registry of builders (:mod:`.registry`), one entry point that adds the initial
weights (:func:`create_model`, :mod:`.factory`), the checkpoint format (:mod:`.checkpoints`), the precision a
model runs at on a device (:mod:`.precision`) and batched inference (:mod:`.inference`).

``from bloodlib import models; models.create_model("resnet18", num_classes=4, pretrained="scratch")``, as
``timm.create_model``.
"""
from bloodlib.models.factory import (KEYWORDS as PRETRAINED_KINDS, InitialWeights, PretrainedUnavailableError,
                                     create_model, describe_initial_weights)
from bloodlib.models.registry import (IMAGENET_MEAN, IMAGENET_STD, REGISTRY, ModelSpec, SmallInputAlexNet,
                                      build_model, check_input_size, count_flops, count_parameters, get_spec,
                                      list_models)

__all__ = ["PRETRAINED_KINDS", "InitialWeights", "PretrainedUnavailableError", "create_model",
           "describe_initial_weights", "IMAGENET_MEAN", "IMAGENET_STD", "REGISTRY", "ModelSpec",
           "SmallInputAlexNet", "build_model", "check_input_size", "count_flops", "count_parameters", "get_spec",
           "list_models"]
