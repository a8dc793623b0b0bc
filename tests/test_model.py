"""The DSAE model: shapes, image conversion, decoders, loss, configuration errors."""

import dataclasses

import pytest
import torch

from dsae.config import ModelConfig, to_dict
from dsae.errors import ConfigError
from dsae.model import (
    FOREGROUND_CONTRAST,
    DeepSpatialAutoencoder,
    SpatialEncoder,
    equivariance_error,
    gaussian_maps,
    nearest_window,
    receptive_field_centres,
    recolour_background,
    recon_target,
    rotate_frames,
    to_float_images,
)
from dsae.spatial_softmax import to_pixels


def _train(model: DeepSpatialAutoencoder, triples: torch.Tensor, steps: int) -> tuple[list[float], dict]:
    """``steps`` Adam steps (lr 0.01) on the loss of the same triples: each step's loss, and the last step's parts."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss, parts = model.loss(triples)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses, parts


def test_paper_shapes_240px():
    """Finn et al. 2016: 240x240 input -> 109x109 feature maps, 16 keypoints, 60x60 recon."""
    paper = ModelConfig(kernels=[7, 5, 5], padding="valid", norm="none", num_keypoints=16, local_keypoints=0, project=False,
                        keypoint_frame="grid", temperature=1.0, recon_size=60, decoder="fc", decoder_hidden=[])
    model = DeepSpatialAutoencoder(paper, 240)
    assert model.feature_size == (109, 109)
    kp, recon = model(torch.zeros(2, 240, 240, 3, dtype=torch.uint8))
    assert kp.shape == (2, 16, 2) and recon.shape == (2, 60, 60)


@pytest.mark.parametrize("padding", ["valid", "same", "replicate"])
@pytest.mark.parametrize("kernels, strides", [([7, 5, 5], [2, 1, 1]), ([4, 3], [2, 2]), ([6], [1])])
def test_feature_size_is_the_size_of_the_maps_the_encoder_makes(padding, kernels, strides):
    """Odd and even kernels, strides 1 and 2: the size the model states is the size the convs give."""
    cfg = ModelConfig(channels=[4] * len(kernels), kernels=kernels, strides=strides, padding=padding, local_keypoints=0)
    model = DeepSpatialAutoencoder(cfg, 33)
    maps = model.encoder.features(torch.zeros(1, 3, 33, 33))
    assert model.feature_size == tuple(maps.shape[-2:])


def _dot_tracker(padding: str, frame: str, kernels=(7, 5, 5), strides=(2, 1, 1)) -> SpatialEncoder:
    """One keypoint whose convs pass the centre pixel of each window through unchanged: its
    feature map lights up only at the cell whose receptive field is centred on a bright dot."""
    cfg = ModelConfig(channels=[1] * len(kernels), kernels=list(kernels), strides=list(strides), padding=padding,
                      norm="none", num_keypoints=1, temperature=1e-3, learn_temperature=False, keypoint_frame=frame)
    encoder = SpatialEncoder(cfg)
    with torch.no_grad():
        for conv in (m for m in encoder.features if isinstance(m, torch.nn.Conv2d)):
            k = conv.kernel_size[0]
            conv.weight.zero_()
            conv.weight[0, :, k // 2, k // 2] = 1.0
            conv.bias.zero_()
    return encoder


@pytest.mark.parametrize("padding, size", [("valid", 64), ("same", 64), ("replicate", 64), ("valid", 63)])
def test_a_keypoint_sits_on_the_pixel_its_cell_looks_at(padding, size):
    """keypoint_frame=image: the keypoint lands on the dot itself, wherever it is in the image."""
    a, b = receptive_field_centres([7, 5, 5], [2, 1, 1], padding)
    assert (a, b) == ((2.0, 11.0) if padding == "valid" else (2.0, 0.0))
    encoder = _dot_tracker(padding, "image")
    for row, col in [(3, 5), (17, 2), (9, 14)]:  # feature cells (i, j) -> the pixels they look at
        image = torch.zeros(1, 3, size, size)
        image[0, :, int(a * row + b), int(a * col + b)] = 1.0
        pixel = to_pixels(encoder(image), size, size)[0, 0]
        torch.testing.assert_close(pixel, torch.tensor([a * col + b, a * row + b]), atol=1e-4, rtol=0)


def test_the_grid_frame_stretches_the_feature_grid_over_the_image():
    """keypoint_frame=grid (checkpoints made before the option): cell j of n sits at x = 2j/(n-1) - 1,
    so the dot at pixel 2*5+11 = 21 of 64 is reported at pixel 5/20 * 63 = 15.75."""
    image = torch.zeros(1, 3, 64, 64)
    image[0, :, 21, 21] = 1.0
    keypoint = _dot_tracker("valid", "grid")(image)[0, 0]
    torch.testing.assert_close(keypoint, torch.tensor([0.5 - 1, 0.5 - 1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(to_pixels(keypoint, 64, 64), torch.tensor([15.75, 15.75]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="model.keypoint_frame"):
        ModelConfig(keypoint_frame="feature")


def test_covariance_follows_the_keypoints_frame():
    encoder = _dot_tracker("valid", "image")
    image = torch.rand(2, 3, 64, 64)
    grid = _dot_tracker("valid", "grid")(image, return_covariance=True).covariance
    ours = encoder(image, return_covariance=True).covariance
    torch.testing.assert_close(ours, grid * (2 * 20 / 63) ** 2)  # a cell step is 2 px of 63, not 63/20


def test_image_conversion():
    images = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    x = to_float_images(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    torch.testing.assert_close(x[1, 2, 4, 6], images[1, 4, 6, 2].float() / 255)
    with pytest.raises(ValueError, match="uint8 images"):
        to_float_images(torch.zeros(2, 3, 5, 5, dtype=torch.uint8))


def test_recon_target_values():
    red = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    red[..., 0] = 255
    torch.testing.assert_close(recon_target(red, ModelConfig(recon_size=4)), torch.full((1, 4, 4), 0.299))
    colour = recon_target(red, ModelConfig(recon_size=4, recon_color=True))
    torch.testing.assert_close(colour, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4))


@pytest.mark.parametrize("decoder", ["gaussian", "transport", "fc"])
def test_a_colour_model_reconstructs_and_learns_colour(decoder):
    """model.recon_color: every decoder draws (B, 3, h, w), the background is a colour image, and
    the loss falls on colour frames."""
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 8], kernels=[3, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      decoder=decoder, recon_color=True)
    model = DeepSpatialAutoencoder(cfg, 16)
    triples = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    model.set_background(triples.flatten(0, 1))
    assert model.background.shape == (3, 8, 8)
    assert model(triples.flatten(0, 1))[1].shape == (6, 3, 8, 8)
    losses, _ = _train(model, triples, 20)
    assert losses[-1] < losses[0]


def test_gaussian_maps_peak_at_keypoints():
    kp = torch.tensor([[[-1.0, -1.0], [1.0, 0.0]]])  # top-left; right edge, middle row
    maps = gaussian_maps(kp, 9, 0.1)
    assert maps.shape == (1, 2, 9, 9)
    assert maps[0, 0].argmax() == 0
    assert divmod(int(maps[0, 1].argmax()), 9) == (4, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_window_matches_the_largest_gaussian_map(dtype):
    """The transport decoder's window: the same values and keypoint gradients as the max over
    the keypoints' Gaussian maps, its backward pass only through each pixel's nearest keypoint."""
    torch.manual_seed(0)
    keypoints = torch.rand(3, 7, 2, dtype=dtype) * 2.4 - 1.2  # some beyond the frame
    keypoints[:, 0] = 9.0  # nearest to no pixel
    keypoints[:, 2] = keypoints[:, 1]  # two at the same place share their pixels' gradient
    keypoints.requires_grad_()
    grad = torch.randn(3, 1, 12, 12, dtype=dtype)
    reference = gaussian_maps(keypoints, 12, 0.15).amax(dim=1, keepdim=True)
    (expected,) = torch.autograd.grad(reference, keypoints, grad)
    window = nearest_window(keypoints, 12, 0.15)
    (got,) = torch.autograd.grad(window, keypoints, grad)
    assert window.shape == (3, 1, 12, 12)
    torch.testing.assert_close(window, reference)
    torch.testing.assert_close(got, expected)
    assert (got[:, 0] == 0).all() and (got[:, 1:] != 0).any(), "a keypoint nearest no pixel gets no gradient"


@pytest.mark.parametrize("decoder", ["fc", "gaussian"])
def test_loss_decreases(decoder):
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 4], kernels=[5, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      decoder=decoder, decoder_channels=8)
    model = DeepSpatialAutoencoder(cfg, 24)
    # One black-and-white pattern, far from the decoder's flat mid-grey start.
    triples = (torch.rand(1, 1, 3, 3, 1) > 0.5).to(torch.uint8).mul(255).expand(4, 3, -1, -1, -1)
    triples = triples.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(-1, -1, -1, -1, 3).contiguous()
    model.set_background(torch.zeros(1, 24, 24, 3, dtype=torch.uint8))  # a black scene: the white squares are foreground
    losses, parts = _train(model, triples, 30)
    assert losses[-1] < 0.5 * losses[0]
    for first_conv in (model.encoder.local_first[0], model.encoder.features[0]):  # the local keypoints', the stack's
        assert first_conv.weight.grad.abs().sum() > 0, "the encoder gets gradients too"
    assert set(parts) == {"loss", "recon_mse", "slow", "equivariance", "concentration"}  # the default terms


def test_slow_term_is_zero_for_constant_velocity():
    cfg = ModelConfig(channels=[4], kernels=[3], strides=[1], num_keypoints=4, local_keypoints=0, recon_size=4,
                      slow_weight=1.0)
    model = DeepSpatialAutoencoder(cfg, 8)
    frame = torch.randint(0, 256, (1, 1, 8, 8, 3), dtype=torch.uint8)
    _, parts = model.loss(frame.repeat(1, 3, 1, 1, 1))  # same frame thrice: zero acceleration
    assert float(parts["slow"]) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_keypoints=8, project=False), "project=true"),
    (dict(padding="full"), "padding"),
    (dict(norm="layer"), "norm"),
    (dict(decoder="transformer"), "decoder"),
    (dict(kernels=[7, 5]), "equal length"),
    (dict(concentration_weight=-0.1), "concentration_weight"),
    (dict(concentration_until=0.0), "concentration_until"),
])
def test_bad_model_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepSpatialAutoencoder(ModelConfig(**kwargs), 64)


def test_projection_to_k_keypoints():
    for project in (True, None):  # None: a projection because 8 differs from the last conv's 16
        model = DeepSpatialAutoencoder(ModelConfig(num_keypoints=8, local_keypoints=0, project=project), 64)
        kp, _ = model(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
        assert kp.shape == (1, 8, 2)
        assert model.encoder.features[-1].out_channels == 8
    plain = DeepSpatialAutoencoder(ModelConfig(num_keypoints=16, local_keypoints=0), 64)  # 16 = 16: no projection
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in plain.encoder.features)


def test_local_keypoints_answer_only_to_their_first_layer_patch():
    """model.local_keypoints: the first K_local maps change only at the cells whose 3x3 first-layer
    patch holds a changed pixel; the whole stack's maps change over its wider receptive field."""
    cfg = ModelConfig(channels=[8, 8, 4], kernels=[3, 3, 3], strides=[2, 1, 1], num_keypoints=6, local_keypoints=2,
                      norm="none", wide_input="frame")  # both read the frame through the shared first conv
    torch.manual_seed(0)
    encoder = SpatialEncoder(cfg).eval()
    image = torch.rand(1, 3, 32, 32)
    changed = image.clone()
    changed[0, :, 16, 16] += 1.0
    with torch.no_grad():
        before, after = encoder.feature_maps(image), encoder.feature_maps(changed)
    assert before.shape == (1, 6, 16, 16)
    local = (after - before)[0, :2].abs().amax(dim=0) > 0  # (16, 16): the cells whose local maps changed
    deep = (after - before)[0, 2:].abs().amax(dim=0) > 0
    # Cell i's 3x3 patch (stride 2, one pixel of padding) covers pixels 2i-1..2i+1: pixel 16 is in cell 8's alone.
    assert local.nonzero().tolist() == [[8, 8]]
    assert deep.sum() == 25  # three 3x3 convs: cells 6..10 on each axis
    assert encoder(image).shape == (1, 6, 2)


def test_local_keypoints_default_to_two_thirds_of_the_keypoints():
    assert ModelConfig().local_count == 64  # of 96
    assert to_dict(ModelConfig())["local_keypoints"] == 64  # a saved config names the count (checkpoint.model_settings_as_trained)
    assert ModelConfig(num_keypoints=9).local_count == 6
    assert ModelConfig(num_keypoints=8, local_keypoints=0).local_count == 0
    with pytest.raises(ConfigError, match="model.local_keypoints=0"):  # the fix is named where local maps cannot be
        ModelConfig(padding="valid")


@pytest.mark.parametrize("kwargs", [dict(local_keypoints=96), dict(local_keypoints=8, padding="valid"),
                                     dict(local_keypoints=8, strides=[2, 2, 1]), dict(local_keypoints=8, kernels=[3, 2, 1])])
def test_local_keypoints_need_maps_on_one_grid(kwargs):
    with pytest.raises(ConfigError, match="local_keypoints"):
        ModelConfig(**kwargs)


def test_too_small_image_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        DeepSpatialAutoencoder(ModelConfig(padding="valid", local_keypoints=0), 12)  # 12 -> 5 -> 3 -> 1 px


def test_background_is_the_median_frame_and_weights_what_differs():
    cfg = ModelConfig(channels=[8, 4], kernels=[5, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      decoder="gaussian", foreground_weight=10.0)
    model = DeepSpatialAutoencoder(cfg, 32)
    frames = torch.full((5, 32, 32, 3), 100, dtype=torch.uint8)
    frames[0, :8, :8] = 255  # one frame differs: the median ignores it
    model.set_background(frames)
    torch.testing.assert_close(model.background, torch.full((8, 8), 100 / 255))
    torch.testing.assert_close(model.decoder.background.data, model.background)
    triples = frames[:3].unsqueeze(0).expand(2, 3, 32, 32, 3).contiguous()
    weighted, _ = model.loss(triples)
    model.cfg.foreground_weight = 0.0
    plain, _ = model.loss(triples)
    assert not torch.isclose(weighted, plain), "the pixels that differ from the background weigh more"


def test_scene_difference_reads_each_frame_less_the_scenes_median_frame():
    """model.scene_difference: the first conv reads 6 channels, the last 3 the frame less the
    median of the frames set_background saw; a frame of another size is refused; the loss (with
    the equivariance term, which turns the 6-channel input) trains."""
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 4], kernels=[3, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      scene_difference=True, wide_input="frame")
    model = DeepSpatialAutoencoder(cfg, 16)
    assert model.encoder.features[0].in_channels == 6
    frames = torch.full((5, 16, 16, 3), 100, dtype=torch.uint8)
    frames[0, :4, :4] = 255  # one frame differs: the median ignores it
    model.set_background(frames)
    torch.testing.assert_close(model.encoder.scene, torch.full((1, 3, 16, 16), 100 / 255))
    inputs = model.encoder.inputs(to_float_images(frames[:2]))
    assert inputs.shape == (2, 6, 16, 16)
    torch.testing.assert_close(inputs[0, 3:, :4, :4], torch.full((3, 4, 4), 155 / 255))  # where frame 0 differs
    torch.testing.assert_close(inputs[1, 3:], torch.zeros(3, 16, 16))  # a frame like the scene: no difference
    assert "encoder.scene" in model.state_dict()  # saved with the weights: the encoder carries its scene
    with pytest.raises(ValueError, match=r"trained on \(16, 16\) frames"):
        model.encoder(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    triples = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    losses, parts = _train(model, triples, 15)
    assert "equivariance" in parts and losses[-1] < losses[0]


def test_wide_keypoints_read_the_foreground_and_local_ones_the_frame():
    """model.wide_input=foreground: the stack of the wide keypoints reads how far each pixel is
    from the scene's median frame, in units of FOREGROUND_CONTRAST and at most 1, so a pixel well
    off the scene looks the same to it whatever its shade; the local keypoints read the frame
    through a first conv of their own. Without local keypoints every keypoint reads the frame."""
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 8, 4], kernels=[3, 3, 3], strides=[2, 1, 1], num_keypoints=6, local_keypoints=2,
                      norm="none", recon_size=8, wide_input="foreground")
    model = DeepSpatialAutoencoder(cfg, 32).eval()
    assert model.encoder.features[0].in_channels == 3 and model.encoder.local_first[0].in_channels == 3
    model.set_background(torch.full((5, 32, 32, 3), 100, dtype=torch.uint8))
    frames = torch.full((3, 32, 32, 3), 100, dtype=torch.uint8)
    object_ = (slice(12, 20), slice(12, 20))
    frames[0][object_], frames[1][object_], frames[2][object_] = 200, 250, 110  # far off the scene, farther, a little off
    x = model.encoder.inputs(to_float_images(frames))
    assert x.shape == (3, 6, 32, 32)
    torch.testing.assert_close(x[:, :3], to_float_images(frames))  # the frame, for the local keypoints
    torch.testing.assert_close(x[:, 3:, 16, 16], torch.tensor([1.0, 1.0, (10 / 255) / FOREGROUND_CONTRAST]).repeat(3, 1).T)
    assert x[:, 3:, :12].abs().max() == 0  # pixels like the scene: no foreground
    with torch.no_grad():
        maps, local_first = model.encoder.feature_maps(x), model.encoder.local_first(x[:, :3])
    torch.testing.assert_close(maps[0, 2:], maps[1, 2:])  # the wide maps: the same silhouette
    assert not torch.allclose(local_first[0], local_first[1])  # what the local maps read: another shade
    assert not torch.allclose(maps[0, 2:], maps[2, 2:])  # a faint difference is a faint foreground
    assert "encoder.scene" in model.state_dict()  # saved with the weights: the encoder carries its scene
    losses, parts = _train(model.train(), torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8), 15)
    assert "equivariance" in parts and losses[-1] < losses[0]  # the equivariance term turns all 6 channels
    plain = DeepSpatialAutoencoder(ModelConfig(channels=[8, 4], kernels=[3, 3], strides=[2, 1], num_keypoints=4,
                                               local_keypoints=0, recon_size=8, wide_input="foreground"), 32)
    assert plain.encoder.scene is None and plain.encoder.local_first is None and plain.encoder.features[0].in_channels == 3
    with pytest.raises(ConfigError, match="model.wide_input=frame"):
        ModelConfig(scene_difference=True, wide_input="foreground")
    with pytest.raises(ConfigError, match="model.wide_input"):
        ModelConfig(wide_input="mask")


def _at_wide_temperatures_1_and_2(cfg: ModelConfig) -> tuple[DeepSpatialAutoencoder, DeepSpatialAutoencoder]:
    """Two models of ``cfg`` with the same weights, at model.wide_temperature 1 and 2."""
    torch.manual_seed(0)
    sharp = DeepSpatialAutoencoder(dataclasses.replace(cfg, wide_temperature=1.0), 32).eval()
    soft = DeepSpatialAutoencoder(dataclasses.replace(cfg, wide_temperature=2.0), 32).eval()
    soft.load_state_dict(sharp.state_dict())
    return sharp, soft


def test_wide_temperature_softens_the_wide_keypoints_alone():
    """model.wide_temperature: the wide keypoints' maps are divided by it before the shared
    softmax, the local ones' left as they are, on the frame and beside the foreground alike; a
    wide keypoint's softmax then weighs its map's other cells more, and the keypoint moves."""
    for wide_input in ("frame", "foreground"):
        sharp, soft = _at_wide_temperatures_1_and_2(ModelConfig(
            channels=[8, 8, 4], kernels=[3, 3, 3], strides=[2, 1, 1], num_keypoints=6, local_keypoints=2,
            norm="none", recon_size=8, wide_input=wide_input))
        images = torch.rand(3, 3, 32, 32)
        x = sharp.encoder.inputs(images)
        with torch.no_grad():
            maps, soft_maps = sharp.encoder.feature_maps(x), soft.encoder.feature_maps(x)
            keypoints, soft_keypoints = sharp.encoder(images), soft.encoder(images)
        torch.testing.assert_close(soft_maps[:, :2], maps[:, :2])  # the local keypoints: untouched
        torch.testing.assert_close(soft_maps[:, 2:], maps[:, 2:] / 2)  # the wide ones: halved
        torch.testing.assert_close(soft_keypoints[:, :2], keypoints[:, :2])
        assert (soft_keypoints[:, 2:] - keypoints[:, 2:]).abs().max() > 1e-3
    plain, soft = _at_wide_temperatures_1_and_2(ModelConfig(
        channels=[8, 4], kernels=[3, 3], strides=[2, 1], num_keypoints=4, local_keypoints=0, recon_size=8))
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(soft.encoder(images), plain.encoder(images))  # without local keypoints: nothing to soften
    for bad in (0, -1, float("inf")):
        with pytest.raises(ConfigError, match="model.wide_temperature"):
            ModelConfig(wide_temperature=bad)


def test_recolour_background_changes_the_scene_of_the_first_triples_alone():
    """model.background_jitter: in the recoloured triples what matches the median frame takes one
    colour per triple, the object and the pixels beside it stay; the other triples stay whole."""
    torch.manual_seed(0)
    median = torch.full((1, 3, 8, 8), 0.4)
    frames = median.expand(6, 3, 8, 8).clone()
    frames[:, :, 2:4, 2:4] = 1.0  # an object in every frame
    out = recolour_background(frames, median, triples=1)
    torch.testing.assert_close(out[3:], frames[3:])
    torch.testing.assert_close(out[:3, :, 1:5, 1:5], frames[:3, :, 1:5, 1:5])  # the object and its edge
    scene = out[:3, :, 6:, 6:]
    assert not torch.allclose(scene, frames[:3, :, 6:, 6:])
    torch.testing.assert_close(scene, scene[:1].expand_as(scene))  # one colour for the triple's frames
    torch.testing.assert_close(recolour_background(frames, median, triples=0), frames)
    with pytest.raises(ConfigError, match="background_jitter"):
        ModelConfig(background_jitter=1.5)


@pytest.mark.parametrize("recon_loss", ["mse", "l1"])
def test_recon_loss_is_the_mean_per_pixel_error_of_its_kind(recon_loss):
    cfg = ModelConfig(channels=[8, 4], kernels=[5, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      slow_weight=0.0, equivariance_weight=0.0, concentration_weight=0.0, local_keypoints=0,
                      recon_loss=recon_loss)
    model = DeepSpatialAutoencoder(cfg, 32).eval()
    triples = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    total, parts = model.loss(triples)
    images = triples.flatten(0, 1)
    error = model(images)[1] - recon_target(images, cfg)
    expected = error.abs().mean() if recon_loss == "l1" else error.pow(2).mean()
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(parts["recon_mse"], error.pow(2).mean())  # logged as MSE either way


def test_unknown_recon_loss_is_refused():
    with pytest.raises(ConfigError, match="model.recon_loss"):
        ModelConfig(recon_loss="l2")


def test_separation_penalty_is_one_when_crowded_and_vanishes_when_apart():
    from dsae.model import separation_penalty

    crowded = torch.zeros(2, 4, 2)
    apart = torch.tensor([[[-0.9, -0.9], [0.9, -0.9], [-0.9, 0.9], [0.9, 0.9]]])
    assert separation_penalty(crowded, 0.1).item() == pytest.approx(1.0)
    assert separation_penalty(apart, 0.1).item() < 1e-20


def test_transport_decoder_sees_the_frame_only_through_windows_at_the_keypoints():
    """What the frame holds far from every keypoint does not reach the reconstruction; near one, it does."""
    from dsae.model import TransportDecoder

    torch.manual_seed(0)
    cfg = ModelConfig(decoder="transport", num_keypoints=1, recon_size=32, decoder_sigma=0.05, decoder_sigma_end=None)
    decoder = TransportDecoder(cfg).eval()
    keypoints = torch.tensor([[[-0.75, -0.75]]])  # near the top-left corner
    blank = torch.full((1, 64, 64, 3), 128, dtype=torch.uint8)
    far, near = blank.clone(), blank.clone()
    far[:, 48:56, 48:56] = 0  # a dark square at the bottom right, far from the keypoint
    near[:, 6:14, 6:14] = 0  # the same square under the keypoint
    with torch.no_grad():
        base = decoder(keypoints, blank)
        assert torch.allclose(decoder(keypoints, far), base, atol=1e-5)
        assert (decoder(keypoints, near) - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pass images"):
        decoder(keypoints)


def test_local_warmup_opens_only_the_local_keypoints_windows_until_its_share_of_training():
    """model.local_warmup: before that share of training the wide keypoints open no window (moving
    one changes nothing), after it they do; the window std follows decoder_sigma_at throughout."""
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 8], kernels=[3, 3], strides=[2, 1], num_keypoints=2, local_keypoints=1,
                      recon_size=16, local_warmup=0.3)
    model = DeepSpatialAutoencoder(cfg, 32).eval()
    frames = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8)
    local_only, both = torch.tensor([[[-0.5, -0.5], [0.5, 0.5]]]), torch.tensor([[[-0.5, -0.5], [0.5, -0.2]]])
    with torch.no_grad():
        model.set_progress(0.2)
        assert model.decoder.sigma == pytest.approx(cfg.decoder_sigma + (cfg.decoder_sigma_end - cfg.decoder_sigma) * 0.2)
        torch.testing.assert_close(model.decoder(both, frames), model.decoder(local_only, frames))
        model.set_progress(0.3)
        assert (model.decoder(both, frames) - model.decoder(local_only, frames)).abs().max() > 1e-4


def test_the_search_gradient_leaves_the_reconstruction_alone_and_reaches_the_window_where_it_would_open():
    """TransportDecoder's ``search``: the same reconstruction as without it, and its gradient is the
    window's gradient at each pixel (what opening the window there would do to the loss)."""
    from dsae.model import TransportDecoder

    torch.manual_seed(0)
    decoder = TransportDecoder(ModelConfig(num_keypoints=1, recon_size=16))
    keypoints = torch.tensor([[[-0.75, -0.75]], [[0.5, 0.25]]])
    frames = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    probe = torch.zeros(2, 1, 16, 16, requires_grad=True)  # a zero added to the window: its gradient is the window's
    decoder(keypoints, frames, probe).pow(2).sum().backward()
    search = torch.rand(2, 1, 16, 16, requires_grad=True)
    recon = decoder(keypoints, frames, search)
    torch.testing.assert_close(recon, decoder(keypoints, frames))
    recon.pow(2).sum().backward()
    torch.testing.assert_close(search.grad, probe.grad)
    assert probe.grad.abs().amax() > 0


def _search_model(search_weight: float) -> DeepSpatialAutoencoder:
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[8, 8], kernels=[3, 3], strides=[1, 1], num_keypoints=4, local_keypoints=2,
                      recon_size=8, equivariance_weight=0.0, local_warmup=0.3, search_weight=search_weight)
    return DeepSpatialAutoencoder(cfg, 16)


def test_search_weight_trains_the_local_maps_alone_during_the_warmup_and_leaves_the_loss_alone():
    """model.search_weight: before local_warmup's share of training the local keypoints' maps get
    the search gradient (the loss's value unchanged, the wide stack's gradient unchanged); after
    it nothing changes; a negative weight is refused; where it cannot act it changes nothing."""
    triples = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    for progress, searching in ((0.1, True), (0.3, False)):
        runs = []
        for weight in (0.0, 100.0):
            model = _search_model(weight)
            model.set_background(triples.flatten(0, 1))
            model.set_progress(progress)
            total, _ = model.loss(triples)
            total.backward()
            runs.append((float(total.detach()), model.encoder.local[-1].weight.grad, model.encoder.features[0].weight.grad, model.searching))
        (off, local_off, wide_off, _), (on, local_on, wide_on, searched) = runs
        assert searched == searching and on == pytest.approx(off, rel=1e-6)
        torch.testing.assert_close(wide_on, wide_off)
        assert torch.allclose(local_on, local_off) != searching
    with pytest.raises(ConfigError, match="model.search_weight"):
        ModelConfig(search_weight=-1.0)
    for elsewhere in ({"decoder": "gaussian"}, {"local_keypoints": 0}, {"local_warmup": 0.0}):
        model = DeepSpatialAutoencoder(ModelConfig(channels=[8, 8], kernels=[3, 3], strides=[1, 1], num_keypoints=4,
                                                   recon_size=8, search_weight=1.0, **elsewhere), 16)
        model.set_progress(0.0)
        assert not model.searching


@pytest.mark.parametrize("warmup", [-0.1, 1.0])
def test_local_warmup_is_a_share_of_training_below_one(warmup):
    with pytest.raises(ConfigError, match="local_warmup"):
        ModelConfig(local_warmup=warmup)


def test_without_local_keypoints_the_warmup_holds_nothing_back():
    model = DeepSpatialAutoencoder(ModelConfig(local_keypoints=0, local_warmup=0.3), 64)
    model.set_progress(0.0)
    assert model.decoder.open_keypoints is None


def test_decoder_sigma_at_moves_linearly_to_decoder_sigma_end():
    from dsae.model import decoder_sigma_at

    assert decoder_sigma_at(ModelConfig(decoder_sigma=0.1, decoder_sigma_end=None), 0.5) == 0.1
    cfg = ModelConfig(decoder_sigma=0.1, decoder_sigma_end=0.06)
    assert [round(decoder_sigma_at(cfg, p), 12) for p in (-1, 0, 0.5, 1, 2)] == [0.1, 0.1, 0.08, 0.06, 0.06]
    with pytest.raises(ConfigError, match="decoder_sigma_end"):
        ModelConfig(decoder_sigma_end=0.0)


def test_transport_decoder_starts_from_the_scenes_median_colour_image():
    cfg = ModelConfig(channels=[8, 4], kernels=[5, 3], strides=[2, 1], num_keypoints=4, recon_size=8,
                      decoder="transport")
    model = DeepSpatialAutoencoder(cfg, 32)
    frames = torch.randint(0, 256, (9, 32, 32, 3), dtype=torch.uint8)
    model.set_background(frames)
    expected = torch.nn.functional.interpolate(to_float_images(frames), size=(8, 8), mode="area").median(0).values
    torch.testing.assert_close(model.decoder.scene[0], expected)
    loss, parts = model.loss(torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8))
    loss.backward()
    assert model.encoder.features[0].weight.grad.abs().sum() > 0  # the keypoints are trained through the windows


def _dot(size: int, row: int, col: int) -> torch.Tensor:
    """A float frame (1, 3, size, size), black but for one white pixel."""
    frame = torch.zeros(1, 3, size, size)
    frame[0, :, row, col] = 1.0
    return frame


def _brightest(frames: torch.Tensor) -> torch.Tensor:
    """A keypoint that turns with the frame by construction: the centroid of brightness,
    (B, 3, H, W) -> (B, 1, 2) in normalised coordinates (pixel centres at linspace(-1, 1))."""
    b, _, h, w = frames.shape
    weights = frames.mean(1) / frames.mean(1).sum((1, 2), keepdim=True)
    grid = torch.linspace(-1, 1, w)
    return torch.stack([(weights.sum(1) * grid).sum(-1), (weights.sum(2) * grid).sum(-1)], -1)[:, None]


def test_rotate_frames_carries_a_point_to_its_keypoint_times_the_matrix():
    frame, (row, col) = _dot(64, 20, 45), (20, 45)
    grid = torch.linspace(-1, 1, 64)
    turned, rotation = rotate_frames(frame, torch.tensor([0.7]))
    assert torch.allclose(_brightest(turned), torch.stack([grid[col], grid[row]])[None, None] @ rotation, atol=0.01)
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(2)[None], atol=1e-6)


def test_equivariance_error_is_zero_for_keypoints_that_turn_with_the_frame_and_not_for_fixed_ones():
    frames = torch.cat([_dot(64, 20, 45), _dot(64, 40, 30), _dot(64, 31, 33)])
    turned, rotation = rotate_frames(frames, torch.tensor([0.5, -2.0, 3.0]))
    everyone = torch.ones(3, 1, dtype=torch.bool)
    assert float(equivariance_error(_brightest(turned), _brightest(frames), rotation, everyone)) < 1e-3
    fixed = torch.tensor([[[0.5, -0.25]]]).expand(3, 1, 2)
    assert float(equivariance_error(fixed, fixed, rotation, everyone)) > 0.01
    assert float(equivariance_error(fixed, fixed, rotation, ~everyone)) == 0.0


def test_equivariance_error_weighs_each_keypoint_by_its_weight():
    """model.wide_equivariance: each keypoint's squared distance times its weight, over the same count."""
    fixed = torch.tensor([[[0.5, -0.25], [0.1, 0.3]]]).expand(3, 2, 2)
    _, rotation = rotate_frames(torch.zeros(3, 1, 8, 8), torch.tensor([0.5, -2.0, 3.0]))
    everyone = torch.ones(3, 2, dtype=torch.bool)
    first, second = (float(equivariance_error(fixed[:, [k]], fixed[:, [k]], rotation, everyone[:, [k]])) for k in (0, 1))
    weighted = equivariance_error(fixed, fixed, rotation, everyone, torch.tensor([1.0, 10.0]))
    assert float(weighted) == pytest.approx((first + 10 * second) / 2, rel=1e-5)


def test_wide_equivariance_weighs_the_wide_keypoints_alone():
    """With model.wide_equivariance=0 only the local keypoints pay for not turning with the frame."""
    cfg = ModelConfig(channels=[8, 4], kernels=[3, 3], strides=[1, 1], num_keypoints=8, local_keypoints=4,
                      recon_size=4, temperature=0.05, learn_temperature=False, equivariance_weight=1.0)
    triples = torch.randint(0, 256, (8, 3, 16, 16, 3), dtype=torch.uint8)
    terms = {}
    for wide in (0.0, 1.0):
        torch.manual_seed(0)  # the same weights and turns
        model = DeepSpatialAutoencoder(dataclasses.replace(cfg, wide_equivariance=wide), 16)
        model.set_background(triples.flatten(0, 1))
        total, parts = model.loss(triples)
        total.backward()
        terms[wide] = (float(parts["equivariance"]), model.encoder.features[0].weight.grad,
                       model.encoder.local_first[0].weight.grad)
    assert 0 < terms[0.0][0] < terms[1.0][0]
    assert not torch.allclose(terms[0.0][1], terms[1.0][1])  # the wide stack's gradient changes with its weight
    assert torch.allclose(terms[0.0][2], terms[1.0][2])  # the local keypoints' does not
    with pytest.raises(ConfigError, match="model.wide_equivariance"):
        ModelConfig(wide_equivariance=-1.0)


def test_equivariance_share_sets_how_many_frames_are_turned(monkeypatch):
    """model.equivariance_share: the middle frame of one triple in this many is turned (at
    least one), so at 1 every triple's is, and below 1 the first and last frames too, every
    frame at 1/3; a share written to 7 digits (0.3333333, 0.6666667) turns as many as the
    fraction it stands for; less than 1/3 is refused."""
    turned = []

    def recording(images, angles):
        turned.append(images)
        return rotate_frames(images, angles)

    monkeypatch.setattr("dsae.model.rotate_frames", recording)
    triples = torch.randint(0, 256, (8, 3, 16, 16, 3), dtype=torch.uint8)
    for share in (4, 1, 16, 0.5, 0.3333333, 0.6666667):
        cfg = ModelConfig(channels=[4], kernels=[3], strides=[1], num_keypoints=4, local_keypoints=0, recon_size=4,
                          padding="same", equivariance_share=share)
        DeepSpatialAutoencoder(cfg, 16).loss(triples)
    assert [len(images) for images in turned] == [2, 8, 1, 16, 24, 12]
    first, middle, last = (to_float_images(triples[:, i]) for i in range(3))
    torch.testing.assert_close(turned[0], middle[:2])  # the middle frames of the first triples
    torch.testing.assert_close(turned[3], torch.cat([middle, first]))
    torch.testing.assert_close(turned[4], torch.cat([middle, first, last]))  # every frame
    for bad in (0, 0.3, float("inf")):
        with pytest.raises(ConfigError, match="model.equivariance_share"):
            ModelConfig(equivariance_share=bad)


def _equivariance_model(temperature: float) -> DeepSpatialAutoencoder:
    cfg = ModelConfig(channels=[4], kernels=[3], strides=[1], num_keypoints=4, local_keypoints=0, recon_size=4,
                      padding="same", temperature=temperature, learn_temperature=False, equivariance_weight=1.0)
    return DeepSpatialAutoencoder(cfg, 16)


def test_the_equivariance_term_enters_the_loss_and_trains_the_encoder():
    torch.manual_seed(0)
    model = _equivariance_model(temperature=1e-3)  # sharp softmax: every keypoint has found something
    triples = torch.randint(0, 256, (8, 3, 16, 16, 3), dtype=torch.uint8)
    total, parts = model.loss(triples)
    assert float(parts["equivariance"]) > 0
    assert float(total.detach()) == pytest.approx(float(parts["recon_mse"] + 0.01 * parts["slow"] + parts["equivariance"]), rel=1e-4)
    total.backward()
    assert model.encoder.features[0].weight.grad.abs().sum() > 0


def test_a_diffuse_keypoint_need_not_turn_with_the_frame():
    torch.manual_seed(0)
    model = _equivariance_model(temperature=1e3)  # flat softmax: no keypoint has found anything
    _, parts = model.loss(torch.randint(0, 256, (8, 3, 16, 16, 3), dtype=torch.uint8))
    assert float(parts["equivariance"]) == 0.0


def test_turned_frames_leave_the_frames_keypoints_as_the_encoder_gives_them():
    torch.manual_seed(0)
    model = _equivariance_model(temperature=0.1).eval()  # eval: batch norm does not mix the two batches
    x = to_float_images(torch.randint(0, 256, (24, 16, 16, 3), dtype=torch.uint8))
    keypoints, _, features = model._encode_with_turns(x)
    assert torch.equal(features, model.encoder.feature_maps(x))
    assert torch.allclose(keypoints, model.encoder(x), atol=1e-6)


def test_attention_spread_is_the_variance_of_each_keypoints_softmax_in_the_keypoints_frame():
    encoder = SpatialEncoder(ModelConfig(), 64)  # 32x32 maps, cells 2 px apart in the image frame
    features = torch.full((1, 2, 32, 32), -1e4)
    features[0, 0, 5, 7] = 0.0  # all of keypoint 0's mass in one cell: no spread
    features[0, 1, 10, 3:5] = 0.0  # keypoint 1's halved between two neighbours along x
    half_step = 2.0 / 63  # half of the 2 px between them, in normalised image units
    spread = encoder.attention_spread(encoder.held_attention(features), (64, 64))
    assert float(spread) == pytest.approx(half_step ** 2 / 2, rel=1e-4)  # the mean of 0 and half_step^2


def test_attention_spread_is_the_trace_of_the_softmax_covariance_on_any_maps():
    """The per-axis marginals give what the full 2x2 covariance's diagonal gives, value and gradient."""
    from dsae.spatial_softmax import spatial_soft_argmax_full

    torch.manual_seed(0)
    encoder = SpatialEncoder(ModelConfig(), 64)
    features = torch.randn(3, 5, 32, 32, requires_grad=True)
    covariance = spatial_soft_argmax_full(features, encoder.softmax.temperature.detach(), return_covariance=True).covariance
    scale, _ = encoder._grid_to_image(features, (64, 64))
    plain = (covariance.diagonal(dim1=-2, dim2=-1) * scale.pow(2)).sum(-1).mean()
    spread = encoder.attention_spread(encoder.held_attention(features), (64, 64))
    torch.testing.assert_close(spread, plain)
    torch.testing.assert_close(*(torch.autograd.grad(v, features)[0] for v in (spread, plain)))


def _concentration_model(local_keypoints: int, **kwargs) -> DeepSpatialAutoencoder:
    """A tiny model on 16 px frames with 4 keypoints and the concentration term, without the equivariance term."""
    torch.manual_seed(0)
    cfg = ModelConfig(channels=[4, 4], kernels=[3, 3], strides=[1, 1], num_keypoints=4, local_keypoints=local_keypoints,
                      recon_size=4, equivariance_weight=0.0, **kwargs)
    return DeepSpatialAutoencoder(cfg, 16)


def test_the_concentration_term_enters_the_loss_and_leaves_the_temperature_alone():
    model = _concentration_model(0, concentration_weight=0.5)
    total, parts = model.loss(torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8))
    assert float(total.detach()) == pytest.approx(float(parts["recon_mse"] + 0.01 * parts["slow"] + 0.5 * parts["concentration"]), rel=1e-4)
    features = model.encoder.feature_maps(to_float_images(torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)))
    model.encoder.attention_spread(model.encoder.held_attention(features), (16, 16)).backward()
    assert model.encoder.softmax.log_temperature.grad is None  # the term sharpens the maps, not the softmax
    assert model.encoder.features[0].weight.grad.abs().sum() > 0


def test_the_concentration_term_counts_the_local_keypoints_alone():
    model = _concentration_model(2, concentration_weight=1.0)
    triples = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    _, parts = model.loss(triples)
    features = model.encoder.feature_maps(model.encoder.inputs(to_float_images(triples.flatten(0, 1))))  # the same batch: the same norms
    local, every = (model.encoder.attention_spread(model.encoder.held_attention(f), (16, 16)).detach() for f in (features[:, :2], features))
    assert float(parts["concentration"]) == pytest.approx(float(local), rel=1e-5)
    assert float(local) != pytest.approx(float(every), rel=1e-3)


def test_the_concentration_term_counts_until_its_share_of_training():
    model = _concentration_model(2, concentration_weight=1.0, concentration_until=0.3)
    triples = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    for progress, counted in ((0.0, True), (0.29, True), (0.3, False), (1.0, False)):
        model.set_progress(progress)
        total, parts = model.loss(triples)
        assert ("concentration" in parts) == counted
        assert float(total.detach()) == pytest.approx(
            float(parts["recon_mse"] + 0.01 * parts["slow"] + parts.get("concentration", 0.0)), rel=1e-4)
