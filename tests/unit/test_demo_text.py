"""`carpsim demo` writes the backup's master-down wait from the timers, not from memory."""

from __future__ import annotations

from carpsim.cli.demo import master_down_text
from carpsim.protocol import timers
from carpsim.protocol.constants import MasterDownFormula


def test_the_reference_backup_waits_three_adverts_plus_its_skew() -> None:
    want = timers.master_down_interval(1, 100)
    assert master_down_text({"advbase": 1, "advskew": 100}) == f"3 x 1s + 100/256 s = {want:.3f} s"
    assert f"{want:.3f}" == "3.391"


def test_the_text_follows_the_vip_settings_and_formula() -> None:
    vip = {"advbase": 2, "advskew": 50, "deadratio": 4, "master_down_formula": "openbsd"}
    want = timers.master_down_interval(2, 50, deadratio=4, formula=MasterDownFormula.OPENBSD)
    assert master_down_text(vip) == f"4 x (2s + 50/256 s) = {want:.3f} s"
    assert master_down_text({"advskew": 0}) == "3 x 1s + 0/256 s = 3.000 s"
