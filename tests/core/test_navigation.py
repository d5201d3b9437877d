import math

import numpy as np
import pytest

from m3_core.errors import InvalidInputError
from m3_core.navigation import command_target, standoff_goal


def test_goal_faces_object_from_robot_side():
    g = standoff_goal([1, -0.5, 0], [3, 0.5, 1], distance=1.0, robot_xy=[10.0, 0.0])
    # centre (2, 0); circumradius sqrt(2^2 + 1^2)/2; robot on +x -> goal on +x, yaw = pi
    r = math.sqrt(5) / 2 + 1.0
    assert g.x == pytest.approx(2 + r) and g.y == pytest.approx(0.0, abs=1e-12)
    assert abs(abs(g.yaw) - math.pi) < 1e-9
    qx, qy, qz, qw = g.quat_xyzw
    assert qx == qy == 0 and qz**2 + qw**2 == pytest.approx(1.0)


def test_goal_avoids_obstacles():
    robot = [0.0, 5.0]  # robot on +y side
    blocked = np.array([[0.0, 0.5 + 0.8 + math.sqrt(0.5)]])  # disc right where +y goal would be
    free = standoff_goal([-0.5, -0.5, 0], [0.5, 0.5, 1], distance=0.8, robot_xy=robot)
    assert free.x == pytest.approx(0.0, abs=1e-9) and free.y > 0
    g = standoff_goal(
        [-0.5, -0.5, 0],
        [0.5, 0.5, 1],
        distance=0.8,
        robot_xy=robot,
        obstacles_xy=blocked,
        robot_radius=0.3,
    )
    assert np.min(np.linalg.norm(blocked - [g.x, g.y], axis=1)) >= 0.3
    # still faces the centre
    assert math.atan2(-g.y, -g.x) == pytest.approx(g.yaw)


def test_no_free_goal_and_bad_box():
    ring = np.array([[math.cos(a) * 1.5, math.sin(a) * 1.5] for a in np.linspace(0, 6.3, 200)])
    with pytest.raises(InvalidInputError, match="no free"):
        standoff_goal([-0.1, -0.1, 0], [0.1, 0.1, 1], distance=1.36, obstacles_xy=ring)
    with pytest.raises(InvalidInputError):
        standoff_goal([0, 0, float("nan")], [1, 1, 1])


@pytest.mark.parametrize(
    "command, target",
    [
        ("go to the espresso machine", "espresso machine"),
        ("Go to the espresso machine.", "espresso machine"),
        ("please navigate to a chair", "chair"),
        ("drive over to my backpack!", "backpack"),
        ("head towards the red mug", "red mug"),
        ("find the tripod", "tripod"),
        ("espresso", "espresso"),
        ("  table  ", "table"),
        ("go-kart", "go-kart"),  # a name that starts like a verb stays whole
        ("go to theatre seats", "theatre seats"),
        ("the table", "the table"),  # no verb: as is (an open-vocabulary query may want it)
    ],
)
def test_command_target_strips_the_verb_and_article(command, target):
    assert command_target(command) == target


@pytest.mark.parametrize("command", ["", "   ", "go to the", "find ."])
def test_command_without_an_object_is_refused(command):
    with pytest.raises(InvalidInputError, match="no object"):
        command_target(command)
