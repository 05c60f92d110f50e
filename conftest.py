"""For the notebook lane (`pytest --nbval-lax notebooks`): a cell that draws a figure must show it.

gptkit's plotting helpers return closed figures (so a script never piles up open ones), and a
notebook shows such a figure only when the cell ends with it or displays it. A cell that draws
and then ends with an assert shows nothing, and a learner never sees the plot. nbval executes
the cells; this hook reads each cell's outputs from that same execution, so it costs no extra run.
"""

import re

import pytest

# A figure is made by a statement at the cell's top level (helpers defined in the cell are
# indented): matplotlib's constructors, or one of gptkit's plot_* / draw_* helpers.
FIGURE_CALL = re.compile(r"^(?:\w[\w, ()]*=\s*)?(?:plt\.(?:figure|subplots)|plot_\w+|draw_\w+)\(", re.MULTILINE)


def makes_figure(source: str) -> bool:
    return bool(FIGURE_CALL.search(source))


def shows_image(outputs) -> bool:
    return any("image/png" in out.get("data", {}) for out in outputs or [])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    cell = getattr(item, "cell", None)  # nbval's IPyNbCell; other items pass through
    if cell is not None and cell.cell_type == "code" and makes_figure(cell.source):
        if not shows_image(item.test_outputs):
            pytest.fail(
                f"{item.name}: this cell draws a figure but shows none (a closed figure must be the "
                "cell's last expression, or displayed with IPython.display.display)",
                pytrace=False,
            )
    return result
