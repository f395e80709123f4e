"""pure_backprop.drawing: the graphs' values (forward, the hand backward walk, fan-out sums)
against the book's numbers, closed forms and jax.grad; the checks of a graph's description;
and the figures (their texts, and no two texts or a text and a node overlapping)."""

import itertools

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from pure_backprop import drawing, graphs, nodes
from pure_backprop.layers import sigmoid

matplotlib.use("Agg")


def test_apple_values_are_the_books():
    values = drawing.evaluate(drawing.apple_graph())
    assert values.forward["price"] == pytest.approx(200.0) and values.forward["total"] == pytest.approx(220.0)
    assert values.backward["apple"] == pytest.approx(2.2)
    assert values.backward["count"] == pytest.approx(110.0)
    assert values.backward["tax"] == pytest.approx(200.0)
    assert values.backward["price"] == pytest.approx(1.1) and values.backward["total"] == 1.0


def test_apple_orange_values_are_the_books():
    values = drawing.evaluate(drawing.apple_orange_graph())
    expected_forward = {"apple_price": 200.0, "orange_price": 450.0, "price": 650.0, "total": 715.0}
    expected_backward = {"apple": 2.2, "apple_count": 110.0, "orange": 3.3, "orange_count": 165.0, "tax": 650.0,
                         "apple_price": 1.1, "orange_price": 1.1, "price": 1.1}
    for name, value in expected_forward.items():
        assert values.forward[name] == pytest.approx(value), name
    for name, value in expected_backward.items():
        assert values.backward[name] == pytest.approx(value), name


def test_the_example_of_the_module_docstring():
    g = drawing.Graph(inputs={"apple": 100.0, "count": 2.0, "tax": 1.1},
                      steps=[drawing.step("price", nodes.multiply, "apple", "count"),
                             drawing.step("total", nodes.multiply, "price", "tax")])
    values = drawing.evaluate(g)
    assert (float(values.forward["price"]), float(values.backward["apple"])) == pytest.approx((200.0, 2.2))
    assert g.output == "total" and [s.label for s in g.steps] == ["\u00d7", "\u00d7"]


@pytest.mark.parametrize("x", [-3.0, -0.5, 0.0, 1.0, 4.0])
def test_sigmoid_graph_walks_back_to_y_times_one_minus_y(x):
    values = drawing.evaluate(drawing.sigmoid_graph(x))
    y = values.forward["y"]
    dx = values.backward["x"]
    assert values.forward["x"].dtype == jnp.float64
    np.testing.assert_allclose(y, jax.nn.sigmoid(x), rtol=1e-14)
    np.testing.assert_allclose(dx, y * (1 - y), rtol=1e-13)
    np.testing.assert_allclose(dx, jax.grad(lambda v: 1 / (1 + jnp.exp(-v)))(jnp.float64(x)), rtol=1e-13)
    # the same four nodes as pure_backprop.graphs.sigmoid_graph, so the same gradient
    out, residuals = graphs.sigmoid_graph.forward(((),) * 4, jnp.float64(x))
    np.testing.assert_allclose(dx, graphs.sigmoid_graph.backward(((),) * 4, residuals, jnp.ones_like(out))[1],
                               rtol=1e-15)
    assert [s.label for s in drawing.sigmoid_graph(x).steps] == ["\u2212x", "exp", "+1", "1/x"]


@pytest.mark.parametrize("scores, target", [((0.3, 2.9, 4.0), 2), ((1.0, -2.0, 0.5), 0),
                                            ((0.2, 0.1, -0.4), (0.2, 0.5, 0.3))])
def test_softmax_cross_entropy_graph_walks_back_to_p_minus_t(scores, target):
    g = drawing.softmax_cross_entropy_graph(scores, target)
    values = drawing.evaluate(g)
    x = jnp.asarray(scores, dtype=jnp.float64)[None, :]
    t = jax.nn.one_hot(jnp.array([target]), 3, dtype=jnp.float64) if np.ndim(target) == 0 \
        else jnp.asarray(target)[None, :]

    def loss(v):
        return -jnp.sum(t * jax.nn.log_softmax(v, axis=1)) / v.shape[0]

    p = jax.nn.softmax(x, axis=1)
    np.testing.assert_allclose(values.forward["loss"], loss(x), rtol=1e-13)
    np.testing.assert_allclose(values.forward["p"], p, rtol=1e-13)
    np.testing.assert_allclose(values.backward["x"], jax.grad(loss)(x), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(values.backward["x"], (p - t) / 1, rtol=1e-12, atol=1e-16)
    # the same nodes as pure_backprop.graphs.softmax_cross_entropy_graph
    out, residuals = graphs.softmax_cross_entropy_graph.forward(x, t)
    np.testing.assert_allclose(values.backward["x"], graphs.softmax_cross_entropy_graph.backward(residuals, 1.0),
                               rtol=1e-14, atol=1e-17)
    assert [s.label for s in g.steps] == ["exp", "sum", "1/x", "\u00d7", "log", "\u00d7t", "sum", "\u00d7-1"]


def test_the_gradients_of_a_fan_out_are_added():
    # exp's output feeds the row sum and the division: two shares come back, and they add up
    values = drawing.evaluate(drawing.softmax_cross_entropy_graph((0.3, 2.9, 4.0), 2))
    shares = values.edges[("x1", "x2")], values.edges[("x1", "p")]
    np.testing.assert_allclose(values.backward["x1"], shares[0] + shares[1], rtol=1e-15)
    assert not np.allclose(shares[0], values.backward["x1"]) and not np.allclose(shares[1], values.backward["x1"])
    # an input used twice: y = x * exp(x), dy/dx = exp(x) + x * exp(x)
    g = drawing.Graph(inputs={"x": 0.5}, steps=[drawing.step("e", nodes.exp, "x"),
                                                  drawing.step("y", nodes.multiply, "x", "e")])
    values = drawing.evaluate(g)
    np.testing.assert_allclose(values.backward["x"], np.exp(0.5) * 1.5, rtol=1e-15)
    np.testing.assert_allclose(values.edges[("x", "y")], np.exp(0.5), rtol=1e-15)
    np.testing.assert_allclose(values.edges[("x", "e")], 0.5 * np.exp(0.5), rtol=1e-15)


def test_a_value_used_twice_by_one_step():
    g = drawing.Graph(inputs={"x": 3.0}, steps=[drawing.step("y", nodes.multiply, "x", "x")])
    assert drawing.evaluate(g).backward["x"] == pytest.approx(6.0)


def test_affine_graph_gives_dW_db_dx():
    x = jnp.array([[1.0, 2.0], [-1.0, 0.5]])
    W = jnp.array([[1.0, 0.5, -1.0], [0.0, 2.0, 1.0]])
    b = jnp.array([0.1, 0.2, 0.3])
    values = drawing.evaluate(drawing.affine_graph(x, W, b))
    dy = jnp.ones((2, 3))
    np.testing.assert_allclose(values.forward["y"], x @ W + b[None, :])
    np.testing.assert_allclose(values.backward["W"], x.T @ dy)
    np.testing.assert_allclose(values.backward["b"], jnp.sum(dy, axis=0))
    np.testing.assert_allclose(values.backward["x"], dy @ W.T)
    assert [s.label for s in drawing.affine_graph(x, W, b).steps] == ["dot", "+"]


def test_constant_nodes_are_labelled_by_their_constant():
    assert drawing.step("y", nodes.add_constant(1.0), "x").label == "+1"
    assert drawing.step("y", nodes.multiply_constant(-0.5), "x").label == "\u00d7-0.5"
    assert drawing.step("y", nodes.multiply_constant(jnp.ones(3)), "x").label == "\u00d7c"
    assert drawing.step("y", nodes.sum(axis=0), "x").label == "sum"
    assert drawing.step("y", nodes.exp, "x", label="e^x").label == "e^x"
    assert drawing.step("y", sigmoid, "x").label == "sigmoid"  # a layer, named by its module


def test_the_graph_is_not_changed_and_steps_may_come_in_any_order():
    inputs = {"a": 2.0, "b": 3.0}
    steps = [drawing.step("z", nodes.exp, "y"), drawing.step("y", nodes.multiply, "a", "b")]
    g = drawing.Graph(inputs=inputs, steps=steps)
    assert [s.output for s in g.steps] == ["y", "z"] and g.output == "z"
    values = drawing.evaluate(g)
    assert values.backward["a"] == pytest.approx(3.0 * np.exp(6.0))
    assert inputs == {"a": 2.0, "b": 3.0} and [s.output for s in steps] == ["z", "y"]
    with pytest.raises(TypeError):
        g.inputs["a"] = 5.0


@pytest.mark.parametrize("steps, match", [
    ([drawing.step("y", nodes.multiply, "x", "w")], r"step 'y' uses 'w', which is neither an input"),
    ([drawing.step("y", nodes.exp, "x"), drawing.step("y", nodes.log, "x")],
     r"step 'y' defines 'y', which is already the output of an earlier step"),
    ([drawing.step("x", nodes.exp, "x")], r"step 'x' defines 'x', which is already an input"),
    ([drawing.step("a", nodes.add, "x", "c"), drawing.step("b", nodes.exp, "a"), drawing.step("c", nodes.log, "b"),
      drawing.step("out", nodes.exp, "a")],
     r"cycle: step 'a' uses 'c', step 'c' uses 'b', step 'b' uses 'a'"),
    ([drawing.step("y", nodes.exp, "x"), drawing.step("z", nodes.log, "x")], r"exactly one output.*'y', 'z'"),
])
def test_a_broken_graph_is_refused_naming_the_step_and_the_name(steps, match):
    with pytest.raises(ValueError, match=match):
        drawing.Graph(inputs={"x": 1.0}, steps=steps)


def test_a_node_error_names_its_step():
    g = drawing.Graph(inputs={"x": jnp.ones(3), "w": jnp.ones(2)}, steps=[drawing.step("y", nodes.add, "x", "w")])
    with pytest.raises(ValueError, match=r"step 'y' \(\+, inputs x, w\), forward: add: a shape \(3,\)"):
        drawing.evaluate(g)


def test_format_value_is_compact():
    f = drawing.format_value
    assert [f(220.00000000000003), f(2.2), f(0.26894), f(110.00000000000001), f(-1.0), f(-0.0)] == \
        ["220", "2.2", "0.269", "110", "-1", "0"]
    assert f(jnp.array([[0.0900, 0.2447, 0.6652]])) == "[0.09 0.24 0.67]"
    assert f(jnp.array([[1.0, 2.0], [3.0, 4.0]])) == "[[1 2] [3 4]]"
    assert f(jnp.zeros((2, 5))) == "(2, 5) array"
    assert f(1.5e-5) == "1.5e-05" and f(123456.0) == "1.23e+05"


def _texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def test_draw_writes_the_forward_values_above_and_the_gradients_below():
    g = drawing.apple_graph()
    fig = drawing.draw(g)
    texts = fig.axes[0].texts
    by_text = {t.get_text(): t for t in texts}
    for name in ("apple", "count", "tax", "total", "100", "2", "1.1", "200", "220", "2.2", "110", "1"):
        assert name in by_text, name
    assert _texts(fig).count("\u00d7") == 2 and _texts(fig).count("200") == 2  # price forward, tax backward
    red = {t.get_text() for t in texts if t.get_color() == drawing.BACKWARD_COLOR}
    assert red == {"2.2", "110", "200", "1.1", "1"}
    # each gradient sits below its forward value: apple's 2.2 under its 100
    assert by_text["2.2"].get_position()[1] < by_text["100"].get_position()[1]


def test_draw_evaluates_the_graph_itself_or_takes_the_values():
    g = drawing.apple_graph()
    values = drawing.evaluate(g)
    assert sorted(_texts(drawing.draw(g))) == sorted(_texts(drawing.draw(g, values)))


def test_a_fan_out_is_drawn_with_the_sum_before_the_dot_and_each_share_after_it():
    g = drawing.softmax_cross_entropy_graph((0.3, 2.9, 4.0), 2)
    values = drawing.evaluate(g)
    texts = _texts(drawing.draw(g, values))
    for key in (("x1", "x2"), ("x1", "p")):
        assert drawing.format_value(values.edges[key]) in texts
    assert drawing.format_value(values.backward["x1"]) in texts
    assert drawing.format_value(values.backward["x"]) == "[0.018 0.25 -0.26]" and "[0.018 0.25 -0.26]" in texts


def _overlaps(fig):
    """Pairs of texts whose boxes overlap, and texts that overlap a node they do not label."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(1.0, 0.9)) for t in ax.texts]
    found = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    for patch in ax.patches:
        if type(patch).__name__ != "Circle" or patch.get_radius() < 0.1:
            continue
        circle = patch.get_window_extent(renderer)
        inside = [text for text, box in boxes if circle.contains(*box.get_points().mean(axis=0))]
        found += [(text, "node") for text, box in boxes if box.overlaps(circle) and text not in inside]
    return found


@pytest.mark.parametrize("make", [
    drawing.apple_graph, drawing.apple_orange_graph, drawing.sigmoid_graph,
    lambda: drawing.softmax_cross_entropy_graph((0.3, 2.9, 4.0), 2),
    lambda: drawing.affine_graph(jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 0.5], [0.0, 2.0]]), jnp.array([0.1, 0.2])),
], ids=["apple", "apple_orange", "sigmoid", "softmax_cross_entropy", "affine"])
def test_the_ready_made_figures_have_no_overlapping_labels(make):
    fig = drawing.draw(make())
    assert _overlaps(fig) == []
    width, height = fig.get_size_inches()
    assert 2 < width < 11 and 0.5 < height < 6


def test_a_wide_graph_is_cut_into_bands():
    g = drawing.softmax_cross_entropy_graph()
    one_band, bands = drawing.draw(g, max_width=None), drawing.draw(g)
    assert one_band.get_size_inches()[0] > 14 and bands.get_size_inches()[0] < 11
    assert bands.get_size_inches()[1] > one_band.get_size_inches()[1]
    assert sorted(_texts(one_band)) == sorted(_texts(bands))


def test_a_notebook_shows_the_figure_as_a_png():
    fig = drawing.draw(drawing.sigmoid_graph())
    data, size = fig._repr_png_()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert size["width"] == round(fig.get_size_inches()[0] * fig.dpi)
