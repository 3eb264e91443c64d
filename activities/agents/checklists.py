"""Rules-based checklists per kind of metric: the offline answer, and the LLM's starting point."""

from __future__ import annotations

_VIBRATION = [
    "Confirm the reading: check the vibration sensor's mounting and cable, compare with a handheld meter",
    "Check foundation, motor-foot and bearing-housing bolts for looseness",
    "Inspect the coupling (spider, alignment) — especially after recent work",
    "Listen at the bearings and compare bearing temperature with the frame; plan a bearing change if worn",
    "Look for imbalance: build-up on fans or impellers, missing balance weights",
]
_TEMPERATURE = [
    "Confirm the reading: check the temperature sensor and its 4–20 mA loop for a step change",
    "Check cooling: fan cowl, fins and ventilation clear of dust and product",
    "Check the load and the current: overload heats windings and bearings",
    "Check lubrication: grease or oil level and condition",
]
_CURRENT = [
    "Compare the current with the load: is the machine doing more work than usual?",
    "Check the supply: phase voltages balanced within 2 %",
    "Look for mechanical drag: brakes, jammed product, seized bearings, belt tension",
    "Check the motor terminals and cables for heat discoloration",
]
_SPEED = [
    "Check the speed setpoint and the drive's fault log",
    "Check belt or coupling slip and the encoder or speed sensor",
    "Check the load: an overload pulls the speed down",
]
_PRESSURE_FLOW = [
    "Check suction conditions: strainer, inlet valve fully open, suction pressure",
    "Listen for cavitation and check for air leaks on the suction side",
    "Check the discharge valve position and downstream blockages",
    "Check impeller and seal wear at the next stop",
]
_GENERIC = [
    "Confirm the reading with an independent instrument",
    "Check what changed recently on the machine: maintenance, product, settings",
    "Look up the symptom in the machine's manual and follow its checks",
]


def rules_checklist(metric: str) -> list[str]:
    name = metric.lower()
    if "vib" in name:
        return list(_VIBRATION)
    if "temp" in name:
        return list(_TEMPERATURE)
    if "current" in name or name.endswith("_a"):
        return list(_CURRENT)
    if "speed" in name or "rpm" in name:
        return list(_SPEED)
    if "pressure" in name or "flow" in name:
        return list(_PRESSURE_FLOW)
    return list(_GENERIC)


def alarm_checklist(code: str) -> list[str]:
    return [
        f"Look up alarm {code} in the controller's diagnostics buffer and note the time and context",
        f"Look up {code} in the machine manual and follow its listed checks",
        "Check whether the alarm repeats after acknowledging it once",
        *_GENERIC[1:2],
    ]
