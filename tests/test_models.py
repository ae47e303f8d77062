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


def test_weight_standardization_keeps_the_parameters_and_standardises_every_filter():
    torch.manual_seed(0)
    plain = models.build_model("dpresnet", width=16)
    torch.manual_seed(0)
    ws = models.build_model("dpresnet", width=16, weight_standardization=True)
    assert [(n, p.shape) for n, p in plain.named_parameters()] == [(n, p.shape) for n, p in ws.named_parameters()]
    ws.load_state_dict(plain.state_dict())  # the same weights, a different function of them
    convs = [m for m in ws.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, models.WSConv2d) for m in convs)
    for m in convs:
        w = m.standardized_weight()
        assert torch.allclose(w.mean((1, 2, 3)), torch.zeros(w.shape[0]), atol=1e-6)
        var = m.weight.var((1, 2, 3), unbiased=False)
        assert torch.allclose(w.var((1, 2, 3), unbiased=False), var / (var + m.eps), rtol=1e-4)  # 1 up to eps
    x = torch.randn(2, 3, 28, 28)
    assert not torch.allclose(ws(x), plain(x))


def test_weight_gradient_is_the_autograd_gradient_through_the_standardisation():
    conv = models.WSConv2d(3, 4, 3, padding=1, bias=False).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w_hat = conv.standardized_weight()
    w_hat.retain_grad()
    (conv._conv_forward(x, w_hat, None) ** 2).sum().backward()
    torch.testing.assert_close(conv.weight_gradient(w_hat.grad), conv.weight.grad, rtol=1e-10, atol=1e-12)


def test_weight_standardization_is_a_dpresnet_option_only():
    with pytest.raises(ValueError, match="DPResNet option"):
        models.build_model("resnet9", width=16, weight_standardization=True)
