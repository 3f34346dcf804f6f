"""`concordia`: player specs for Google DeepMind's Concordia (`gdm-concordia` on PyPI), as JSON.

Concordia 2.x builds a simulation from `concordia.typing.prefab.Config(prefabs, instances)`;
an instance is `InstanceConfig(prefab: str, role: Role, params: Mapping)` (read in
`concordia/typing/prefab.py`, version 2.1.0). The file holds those instances as JSON:

- one `entity` per persona, prefab `basic__Entity` (`concordia/prefabs/entity/basic.py`, whose
  params are `name`, `goal`, `randomize_choices`), named "Persona 1" ... (personas carry no
  names);
- one `initializer`, prefab `formative_memories_initializer__GameMaster`
  (`concordia/prefabs/game_master/formative_memories_initializer.py`): its
  `player_specific_context` gives the game master each persona's narrative to write the
  player's backstory from, and `player_specific_memories` hands the narrative itself to the
  player as a memory; it passes control to the game master named `default rules`, which the
  simulation adds.

Prefab keys are `<module>__<class>` as `concordia.utils.helper_functions.get_package_classes`
makes them. `personas` maps each player name back to its `persona_id`, traits and weight.
Loading (the README shows it whole)::

    spec = json.load(open("players.json"))
    instances = [prefab_lib.InstanceConfig(prefab=i["prefab"], role=prefab_lib.Role(i["role"]),
                                           params=i["params"]) for i in spec["instances"]]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.exports.sets import ExportSource, agent_names, joinable

FORMAT = "personagen-concordia/1"
ENTITY_PREFAB = "basic__Entity"
INITIALIZER_PREFAB = "formative_memories_initializer__GameMaster"
INITIALIZER_NAME = "initial setup rules"
NEXT_GAME_MASTER = "default rules"


def write(rows: pa.Table, path: Path, source: ExportSource) -> None:
    """One JSON document: the instances and the personas behind the players."""
    records = rows.to_pylist()
    names = agent_names(len(records))
    instances: list[dict[str, Any]] = [
        {"prefab": ENTITY_PREFAB, "role": "entity", "params": {"name": name, "goal": ""}}
        for name in names
    ]
    instances.append(
        {
            "prefab": INITIALIZER_PREFAB,
            "role": "initializer",
            "params": {
                "name": INITIALIZER_NAME,
                "next_game_master_name": NEXT_GAME_MASTER,
                "shared_memories": [],
                "player_specific_context": {
                    name: row["narrative"] for name, row in zip(names, records, strict=True)
                },
                "player_specific_memories": {
                    name: [row["narrative"]] for name, row in zip(names, records, strict=True)
                },
            },
        }
    )
    personas = [{"name": name, **joinable(row)} for name, row in zip(names, records, strict=True)]
    document = {"format": FORMAT, "instances": instances, "personas": personas}
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
