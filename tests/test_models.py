import pytest
import torch
from opacus.validators import ModuleValidator

from fedmedlib import models


def test_dpresnet_at_width_64_is_the_authors_model():
    assert models.count_parameters(models.DPResNet(num_classes=8, width=64)) == 4_802_120


@pytest.mark.parametrize("width, dpresnet, resnet9", [(16, 301_976, 412_696), (32, 1_202_984, 1_645_608)])
def test_parameter_counts_scale_with_width(width, dpresnet, resnet9):
    assert models.count_parameters(models.DPResNet(width=width)) == dpresnet
    assert models.count_parameters(models.ResNet9(width=width)) == resnet9


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("width", [8, 16, 64])
def test_logits_shape(name, width):
    net = models.build_model(name, width=width, num_classes=8).eval()
    assert net(torch.zeros(3, 3, 28, 28)).shape == (3, 8)


def test_dpresnet_has_no_batchnorm_and_no_maxpool_and_valid_groupnorm():
    net = models.DPResNet(width=16)
    kinds = {type(m) for m in net.modules()}
    assert torch.nn.BatchNorm2d not in kinds and torch.nn.MaxPool2d not in kinds
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_groups <= 32


def test_opacus_accepts_dpresnet_and_rejects_resnet9():
    assert ModuleValidator.validate(models.DPResNet(width=16), strict=False) == []
    errors = ModuleValidator.validate(models.ResNet9(width=16), strict=False)
    assert errors and any("BatchNorm" in str(e) for e in errors)


def test_dpresnet_output_of_an_image_ignores_its_batch_mates_resnet9_does_not():
    torch.manual_seed(0)
    image, a, b = torch.randn(1, 3, 28, 28), torch.randn(5, 3, 28, 28), torch.randn(5, 3, 28, 28)
    for name, independent in [("dpresnet", True), ("resnet9", False)]:
        net = models.build_model(name, width=16).train()
        same = torch.allclose(net(torch.cat([image, a]))[0], net(torch.cat([image, b]))[0], atol=1e-5)
        assert same is independent


def test_bad_model_requests_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        models.build_model("resnet50")
    with pytest.raises(ValueError, match="multiple of 8"):
        models.DPResNet(width=12)
