"""ImageNet backbones as framework-free specs: EfficientNet-Lite0, MobileNetV2, ResNet-18 and ResNet-50.

Each follows the layout of the weights it is meant to take (`clsf.models.pretrained` maps their
files onto these layer names), at any input size and class count:

  efficientnet-lite0  TensorFlow's EfficientNet-Lite (and its PyTorch port): "same" padding, relu6,
                      no squeeze-excitation, batch norm epsilon 1e-3
  mobilenet-v2        torchvision's MobileNetV2 by default (PyTorch padding, epsilon 1e-5);
                      padding="same", bn_epsilon=1e-3 is keras.applications' MobileNetV2
  resnet-18/-50       torchvision's ResNets (v1.5: a bottleneck's stride on its 3x3 convolution);
                      stride_in_1x1, conv_bias and bn_epsilon=1.001e-5 give keras.applications' ResNet50

Blocks are named b<i> (MBConv) and layer<stage>_<i> (ResNet), their parts <block>_<part>, so a
weight's name says where it sits. Stochastic depth (EfficientNet's drop-connect) is left out: it
changes nothing at inference, and clsf's engines train these networks without it, alike.
"""

from __future__ import annotations

from clsf.models.spec import (Activation, BatchNorm, Conv, Dense, DepthwiseConv, Dropout, GlobalAvgPool, MaxPool,
                              ModelSpec, Residual)


def _bn(name: str, epsilon: float, momentum: float) -> BatchNorm:
    return BatchNorm(name, momentum=momentum, epsilon=epsilon)


def _mbconv(name: str, cin: int, cout: int, expand: int, kernel: int, stride: int, padding: str, eps: float,
            momentum: float) -> list:
    """An inverted residual: 1x1 expansion (absent at expansion 1), depthwise k x k, 1x1 projection with
    no activation; the input added back where the shapes allow (stride 1, as many channels)."""
    mid = cin * expand
    body = []
    if expand != 1:
        body += [Conv("expand", mid, 1, use_bias=False), _bn("expand_bn", eps, momentum), Activation("expand_relu", "relu6")]
    body += [DepthwiseConv("dw", kernel, stride, padding), _bn("dw_bn", eps, momentum), Activation("dw_relu", "relu6"),
             Conv("project", cout, 1, use_bias=False), _bn("project_bn", eps, momentum)]
    if stride == 1 and cin == cout:
        return [Residual(name, tuple(body), (), activation="linear")]
    from dataclasses import replace

    return [replace(layer, name=f"{name}_{layer.name}") for layer in body]  # the same names as inside a block


# (expansion, output channels, repeats, first stride, kernel) per stage
LITE0_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
                (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))
MOBILENET_V2_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3), (6, 96, 3, 1, 3),
                       (6, 160, 3, 2, 3), (6, 320, 1, 1, 3))


def _inverted_residual_net(name: str, stages, num_classes: int, input_shape, padding: str, eps: float, momentum: float,
                           dropout: float, head: int = 1280) -> ModelSpec:
    layers = [Conv("stem", 32, 3, 2, padding, use_bias=False), _bn("stem_bn", eps, momentum), Activation("stem_relu", "relu6")]
    cin, i = 32, 0
    for expand, cout, repeats, stride, kernel in stages:
        for r in range(repeats):
            layers += _mbconv(f"b{i}", cin, cout, expand, kernel, stride if r == 0 else 1, padding, eps, momentum)
            cin, i = cout, i + 1
    layers += [Conv("head", head, 1, use_bias=False), _bn("head_bn", eps, momentum), Activation("head_relu", "relu6"),
               GlobalAvgPool("gap")]
    if dropout:
        layers.append(Dropout("dropout", float(dropout)))
    layers.append(Dense("logits", num_classes))
    return ModelSpec(name, tuple(layers), tuple(input_shape))


def efficientnet_lite0(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.2, padding: str = "same",
                       bn_epsilon: float = 1e-3) -> ModelSpec:
    """EfficientNet-Lite0 (4.7M parameters at 1,000 classes; 0.77 GFLOP a 224 px image). timm's own
    efficientnet_lite0 weights were trained with padding=symmetric, bn_epsilon=1e-5."""
    return _inverted_residual_net("efficientnet-lite0", LITE0_STAGES, num_classes, input_shape, padding, float(bn_epsilon),
                                  0.99, dropout)


def mobilenet_v2(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.2, padding: str = "symmetric",
                 bn_epsilon: float = 1e-5, bn_momentum: float = 0.9) -> ModelSpec:
    """MobileNetV2 at width 1.0 (3.5M parameters at 1,000 classes; 0.6 GFLOP a 224 px image)."""
    return _inverted_residual_net("mobilenet-v2", MOBILENET_V2_STAGES, num_classes, input_shape, padding,
                                  float(bn_epsilon), float(bn_momentum), dropout)


def _resnet(name: str, bottleneck: bool, repeats, num_classes: int, input_shape, stride_in_1x1: bool, conv_bias: bool,
            eps: float) -> ModelSpec:
    def conv(n, filters, k, s=1):
        return Conv(n, filters, k, s, "symmetric", use_bias=conv_bias)

    layers = [conv("conv1", 64, 7, 2), _bn("bn1", eps, 0.9), Activation("relu", "relu"), MaxPool("maxpool", 3, 2, "symmetric")]
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), repeats), 1):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 1) else 1
            cout = width * 4 if bottleneck else width
            if bottleneck:
                s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
                body = (conv("conv1", width, 1, s1), _bn("bn1", eps, 0.9), Activation("relu1", "relu"),
                        conv("conv2", width, 3, s3), _bn("bn2", eps, 0.9), Activation("relu2", "relu"),
                        conv("conv3", cout, 1), _bn("bn3", eps, 0.9))
            else:
                body = (conv("conv1", width, 3, stride), _bn("bn1", eps, 0.9), Activation("relu1", "relu"),
                        conv("conv2", width, 3), _bn("bn2", eps, 0.9))
            short = (conv("down", cout, 1, stride), _bn("down_bn", eps, 0.9)) if (stride != 1 or cin != cout) else ()
            layers.append(Residual(f"layer{stage}_{i}", body, short, activation="relu"))
            cin = cout
    layers += [GlobalAvgPool("gap"), Dense("logits", num_classes)]
    return ModelSpec(name, tuple(layers), tuple(input_shape))


def resnet_18(num_classes: int = 1000, input_shape=(224, 224, 3), conv_bias: bool = False,
              bn_epsilon: float = 1e-5) -> ModelSpec:
    """ResNet-18, torchvision's layout (11.7M parameters at 1,000 classes; 3.6 GFLOP a 224 px image)."""
    return _resnet("resnet-18", False, (2, 2, 2, 2), num_classes, input_shape, False, bool(conv_bias), float(bn_epsilon))


def resnet_50(num_classes: int = 1000, input_shape=(224, 224, 3), stride_in_1x1: bool = False, conv_bias: bool = False,
              bn_epsilon: float = 1e-5) -> ModelSpec:
    """ResNet-50, torchvision's layout (v1.5; 25.6M parameters at 1,000 classes; 8.2 GFLOP a 224 px image)."""
    return _resnet("resnet-50", True, (3, 4, 6, 3), num_classes, input_shape, bool(stride_in_1x1), bool(conv_bias),
                   float(bn_epsilon))
