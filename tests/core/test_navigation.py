import math

import numpy as np
import pytest

from m3_core.errors import InvalidInputError
from m3_core.navigation import command_target, occupancy_grid, standoff_goal


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


def test_occupancy_grid_matches_a_hand_computed_grid():
    means = np.array(
        [
            [0.02, 0.02, 0.0],  # floor -> cell (row 0, col 0) free
            [0.12, 0.02, 0.01],  # floor -> (0, 2) free
            [0.07, 0.02, 0.5],  # obstacle -> (0, 1) occupied
            [0.02, 0.07, 0.3],  # obstacle -> (1, 0) occupied
            [0.12, 0.02, 0.3],  # obstacle over floor -> (0, 2) occupied wins
            [0.17, 0.02, 2.0],  # above max_height: ignored (and outside the extent)
            [0.22, 0.07, 0.5],  # transparent: ignored
        ]
    )
    alpha = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
    grid = occupancy_grid(means, alpha, resolution=0.05, min_height=0.1, max_height=1.5)
    assert grid.floor_z == pytest.approx(0.0, abs=0.01)  # 1st percentile of the heights
    assert grid.origin == (0.0, 0.0) and grid.resolution == 0.05
    np.testing.assert_array_equal(grid.cells, [[0, 100, 100], [100, -1, -1]])
    np.testing.assert_allclose(
        grid.occupied_xy(), [[0.075, 0.025], [0.125, 0.025], [0.025, 0.075]]
    )
    # an explicit floor moves the height band: at floor 0.25 only the 0.5 m point is an obstacle
    grid = occupancy_grid(means[:5], alpha[:5], resolution=0.05, floor_z=0.25)
    np.testing.assert_array_equal(grid.cells, [[0, 100, 0], [0, -1, -1]])
    with pytest.raises(InvalidInputError, match="no opaque"):
        occupancy_grid(means, np.zeros(7))
    with pytest.raises(InvalidInputError, match="min_height < max_height"):
        occupancy_grid(means, alpha, min_height=2.0, max_height=1.0)


def box_by_a_wall():
    """A room floor, a 0.4 m box at x in [1, 1.4], and a wall at x = 1.65 just behind it."""
    g = np.mgrid[0:3:0.05, -2:2:0.05].reshape(2, -1).T
    floor = np.c_[g, np.zeros(len(g))]
    b = np.mgrid[1.0:1.4:0.02, -0.2:0.2:0.02, 0.0:0.5:0.05].reshape(3, -1).T
    w = np.mgrid[1.65:1.7:0.02, -2:2:0.02, 0.0:2.0:0.1].reshape(3, -1).T
    means = np.concatenate([floor, b, w])
    return means, np.ones(len(means))


def test_a_goal_by_a_box_next_to_a_wall_lands_on_the_free_side():
    means, alpha = box_by_a_wall()
    grid = occupancy_grid(means, alpha, resolution=0.05)
    obstacles = grid.occupied_xy()
    box = ([1.0, -0.2, 0.0], [1.4, 0.2, 0.5])
    robot = [2.5, 0.0]  # on the other side of the wall: its side is +x
    naive = standoff_goal(*box, distance=0.5, robot_xy=robot)
    assert naive.x > 1.65  # without the grid: behind the wall, facing the box through it
    g = standoff_goal(*box, distance=0.5, robot_xy=robot, obstacles_xy=obstacles)
    assert g.x < 1.65 - 0.3  # on the box's free side of the wall
    assert np.min(np.linalg.norm(obstacles - [g.x, g.y], axis=1)) >= 0.3  # not in an obstacle
    r = math.hypot(0.2, 0.2) + 0.5
    assert math.hypot(g.x - 1.2, g.y) == pytest.approx(r)  # still at the stand-off distance
    assert math.atan2(-g.y, 1.2 - g.x) == pytest.approx(g.yaw)  # facing the box


def test_goals_stay_near_floor_the_memory_has_seen():
    box = ([1.0, -0.2, 0.0], [1.4, 0.2, 0.5])
    seen = np.mgrid[0.0:0.6:0.05, -0.3:0.3:0.05].reshape(2, -1).T  # floor seen only at -x
    g = standoff_goal(*box, distance=0.5, robot_xy=[1.2, 3.0], free_xy=seen)
    assert g.x < 1.0 and np.min(np.linalg.norm(seen - [g.x, g.y], axis=1)) <= 0.3
    with pytest.raises(InvalidInputError, match="no free ground"):
        standoff_goal(*box, free_xy=np.zeros((0, 2)))
