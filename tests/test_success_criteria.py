"""Success is the reward: every task's success predicate checked both ways, at its boundaries.

A false positive in a success test corrupts every method trained or evaluated on the task, so each
rule is probed with objects placed directly in the MuJoCo state: just inside a boundary must
succeed, just outside must fail, and the negative cases the rules exist for (an object still held,
a carrot touching the table, a cube beside the mark) must fail. Boundary numbers come from the
tasks' own constants (so the tests follow the code); `test_documented_constants` pins those
constants to the documented rule once, so a silent change of a rule is caught.

Two ways of asking: `_static` evaluates the predicate on a state as placed (`mj_forward`, no time
passes: exact boundaries, floating objects allowed), and `_step` runs one env step with a hold
action on a state that stays put through it (what a learner sees: `info["is_success"]`, the sparse
reward and termination, and the dense reward's 1.0-only-on-success). The robosuite tasks report
robosuite's own `_check_success`; its thresholds are checked the same way at the end.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from steergym.envs import tasks as T
from steergym.envs import widowx as W
from steergym.envs.rotations import quat_to_yaw

EPS = 0.001  # m: "just inside" / "just outside" a boundary
OPEN_STILL = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)  # hold the arm, gripper open
CLOSED_STILL = np.array([0, 0, 0, 0, 0, 0, -1.0], dtype=np.float32)  # hold the arm, gripper closed
PICK_PLACE = [T.PutSpoonOnTowel, T.PutCarrotOnPlate, T.StackGreenOnYellowBlock]  # the "on" tasks


def test_documented_constants():
    """The rules as docs/envs.md and the task docstrings state them (SIMPLER's "on", made stricter)."""
    assert T.XY_TOLERANCE == 0.003  # target's half extent + 3 mm
    assert T.Z_TOLERANCE == 0.02  # at most 2 cm above the target's top
    assert T.Z_SINK_TOLERANCE == 0.005  # and at most 5 mm below it (not in docs/envs.md: contact slack)
    assert T.LiftCube.lift_height == 0.05  # cube's bottom 5 cm above the table
    assert T.PushCube.goal_radius == 0.025  # cube centre within 2.5 cm of the mark
    # "completely on" (may not touch the table) for carrot and stack; spoon and eggplant may
    assert T.PutCarrotOnPlate.completely_on and T.StackGreenOnYellowBlock.completely_on
    assert not T.PutSpoonOnTowel.completely_on and not T.PutEggplantInBasket.completely_on
    assert T.PutEggplantInBasket.inner_half_extents == (0.085, 0.065)  # 17 x 13 cm basket
    assert T.PutEggplantInBasket.in_height == 0.06  # SIMPLER's 6 cm for "in"
    # Heights are measured from the table plane z = 0 (LiftCube, the PushCube resting height).
    env = T.LiftCube()
    table = env.model.geom("table")
    assert table.pos[2] + table.size[2] == pytest.approx(0.0)


# --------------------------------------------------------------------------- helpers
def _env(cls, seed: int = 0, **kwargs):
    env = cls(**kwargs)
    env.reset(seed=seed)
    return env


def _static(env) -> dict:
    """The task's metrics for the state as placed: forward kinematics and collision, no time step."""
    mujoco.mj_forward(env.model, env.data)
    env._contacts_time = -1.0  # contacts are cached per sim time, which did not advance
    return env._evaluate()


def _step(env, action=OPEN_STILL) -> bool:
    """One env step from the placed state; checks what the learner is told and returns success."""
    env.data.qvel[:] = 0.0
    mujoco.mj_forward(env.model, env.data)
    _, reward, terminated, truncated, info = env.step(action)
    success = info["is_success"]
    assert isinstance(success, bool) and not truncated
    assert terminated is (success and env.terminate_on_success)
    if env.reward_type == "sparse":
        assert reward == float(success)
    else:
        assert (reward == 1.0) is success and 0.0 <= reward <= 1.0
    return success


def _settle(env, steps: int = 4) -> None:
    """Let placed objects come to rest with the arm held open and out of the way."""
    env.data.qvel[:] = 0.0
    for _ in range(steps):
        env.step(OPEN_STILL)


def _target_frame(env) -> tuple[np.ndarray, np.ndarray]:
    """Target centre (3,) and its local x and y axes in the world (2, 3)."""
    pos, quat = env.body_pose(env.target)
    yaw = quat_to_yaw(quat)
    axes = np.array([[np.cos(yaw), np.sin(yaw), 0.0], [-np.sin(yaw), np.cos(yaw), 0.0]])
    return pos, axes


def _turn_target(env, yaw: float = 0.4) -> None:
    """Give the target a heading that is not axis-aligned, so the footprint test's frame matters."""
    pos, _ = env.body_pose(env.target)
    env.set_free_body_pose(env.target, pos, yaw)
    mujoco.mj_forward(env.model, env.data)


def _put_source(env, offset_xy=(0.0, 0.0), gap: float = -0.0005, dyaw: float = 0.0) -> np.ndarray:
    """Place the source's centre at `offset_xy` in the target's frame with its collision bottom
    `gap` metres above the target's top (slightly negative: resting contact); returns the position."""
    centre, axes = _target_frame(env)
    geo = env.geometry[env.source]
    xy = centre + offset_xy[0] * axes[0] + offset_xy[1] * axes[1]
    z = env.target_top() + gap + geo.half_extents[2] - geo.center_offset[2]
    pos = np.array([xy[0], xy[1], z])
    _, tquat = env.body_pose(env.target)
    env.set_free_body_pose(env.source, pos, quat_to_yaw(tquat) + dyaw)
    return pos


def _grip(env, obj: str, shift: float = 0.0, fingers: float | None = None) -> None:
    """Put the arm's tcp at `obj`'s grasp point, jaw across the object's y axis, with the pads
    pressing 0.5 mm into it (or open to `fingers` metres per side and the tcp moved `shift` metres
    toward the left pad); the controller target and servo set-points hold that pose through a step."""
    mujoco.mj_forward(env.model, env.data)  # body poses of what was just placed
    pos, quat = env.body_pose(obj)
    yaw = quat_to_yaw(quat)
    local = getattr(env, "grasp_offset", (0.0, 0.0)) if obj == getattr(env, "source", None) else (0.0, 0.0)
    c, s = np.cos(yaw), np.sin(yaw)
    pos[:2] += [c * local[0] - s * local[1], s * local[0] + c * local[1]]
    half_width = _half_width(env, obj)
    finger = half_width - 0.0005 if fingers is None else fingers
    yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # the jaw is symmetric; the wrist's yaw limit is +-pi/2
    grasp_point = pos.copy()
    for _ in range(2):  # the second pass applies `shift` along the jaw axis found in the first
        joints = env.controller.reset(pos, np.array([0.0, 0.0, yaw]), env._home_joints)
        env.data.qpos[env._arm_qpos_adr] = joints
        env.data.ctrl[env._arm_actuators] = joints
        env.data.qpos[env._finger_qpos_adr] = (finger, -finger)
        env.data.ctrl[env._gripper_actuator] = finger
        mujoco.mj_forward(env.model, env.data)
        jaw = env.data.geom("left_pad").xpos - env.data.geom("right_pad").xpos
        pos = grasp_point + shift * jaw / np.linalg.norm(jaw)


def _half_width(env, obj: str) -> float:
    """Half the object's width across its y axis where it is grasped (the spoon: its handle)."""
    if obj == "spoon":
        return float(env.model.geom("spoon_handle").size[1])
    return float(env.geometry[obj].half_extents[1])


# --------------------------------------------------------------------------- pick and place ("on")
@pytest.mark.parametrize("cls", PICK_PLACE, ids=lambda c: c.__name__)
def test_footprint_boundary(cls):
    """Source centre over the target's footprint + XY_TOLERANCE, per axis of the (turned) target."""
    env = _env(cls)
    _turn_target(env)
    _put_source(env)
    assert _static(env)["is_success"] is True
    half = env.geometry[env.target].half_extents
    for axis in (0, 1):
        for sign in (1.0, -1.0):
            for margin, expected in ((-EPS, True), (EPS, False)):
                offset = np.zeros(2)
                offset[axis] = sign * (half[axis] + T.XY_TOLERANCE + margin)
                _put_source(env, offset)
                metrics = _static(env)
                assert metrics["src_on_target"] is expected, (axis, sign, margin)
                assert metrics["is_success"] is expected, (axis, sign, margin)
    # both axes just inside (a footprint corner) is still over the footprint
    _put_source(env, half[:2] + T.XY_TOLERANCE - EPS)
    assert _static(env)["is_success"] is True


@pytest.mark.parametrize("cls", PICK_PLACE, ids=lambda c: c.__name__)
def test_height_band(cls):
    """Source's bottom at most Z_TOLERANCE above the target's top and at most Z_SINK_TOLERANCE
    below it: just inside passes, just outside fails (the band is a height test: a source held
    still in it, not resting, counts, as in SIMPLER)."""
    env = _env(cls)
    _turn_target(env)
    # 0.2 mm past the band as well: the bottom is the colliding geometry's, not the body origin's
    for gap, expected in ((T.Z_TOLERANCE - EPS, True), (T.Z_TOLERANCE + EPS, False),
                          (T.Z_TOLERANCE + 0.0002, False), (0.1, False),
                          (-T.Z_SINK_TOLERANCE + EPS, True), (-T.Z_SINK_TOLERANCE - EPS, False)):
        _put_source(env, gap=gap)
        metrics = _static(env)
        assert metrics["src_on_target"] is expected and metrics["is_success"] is expected, gap


@pytest.mark.parametrize("cls", PICK_PLACE, ids=lambda c: c.__name__)
def test_resting_on_target_is_success_through_step(cls):
    env = _env(cls)
    _put_source(env)
    _settle(env, 2)
    assert _step(env) is True
    dense = _env(cls, reward_type="dense", terminate_on_success=False)
    _put_source(dense)
    _settle(dense, 2)
    assert _step(dense) is True


@pytest.mark.parametrize("cls", PICK_PLACE, ids=lambda c: c.__name__)
def test_source_held_on_target_fails(cls):
    """The gripper has to let go: on the target but squeezed by both pads, or touched by one pad,
    is not a success (statically, and through a step holding the pose)."""
    env = _env(cls)
    _put_source(env)
    _grip(env, env.source)
    metrics = _static(env)
    assert metrics["is_grasped"] is True and metrics["src_on_target"] is True
    assert metrics["is_success"] is False
    assert _step(env, CLOSED_STILL) is False
    assert env.is_grasped(env.source)

    env = _env(cls)
    _put_source(env)
    half_width = _half_width(env, env.source)
    _grip(env, env.source, shift=half_width - 0.02 - 0.0005, fingers=0.02)  # left pad only
    metrics = _static(env)
    assert env.touching(W.LEFT_PAD_TAG, env.object_tag(env.source))
    assert not env.touching(W.RIGHT_PAD_TAG, env.object_tag(env.source))
    assert metrics["src_on_target"] is True and metrics["is_success"] is False


def _carrot_leaning_off_the_plate(env) -> None:
    """Carrot centre over the plate's square footprint but beyond its round rim: it tips and rests
    on the rim and the table, low enough for the height band."""
    _put_source(env, (0.06, 0.06), gap=0.003, dyaw=np.pi / 4)
    _settle(env, 5)


def test_carrot_touching_table_fails():
    """"Completely on": a carrot on the plate's footprint, in the height band, but touching the
    table fails; only the table contact decides it (the same state counts without that rule)."""
    env = _env(T.PutCarrotOnPlate)
    _carrot_leaning_off_the_plate(env)
    assert env.touches_table("carrot") and env.touching(env.object_tag("carrot"), env.object_tag("plate"))
    metrics = _static(env)
    assert metrics["src_on_target"] is False and metrics["is_success"] is False
    assert _step(env) is False
    env.completely_on = False  # the instance only: the xy and height tests alone would pass it
    assert _static(env)["is_success"] is True


def test_green_block_beside_yellow_fails():
    """A green block on the table against the yellow one (touching it, not on it) fails. For the
    stack "completely on" can never be the deciding test: a 3 cm block touching the table has its
    centre at most half its space diagonal up, far below the height band's lower limit."""
    env = _env(T.StackGreenOnYellowBlock)
    _turn_target(env)
    half = env.geometry["green_block"].half_extents
    top = env.target_top()
    _put_source(env, (2 * half[0] + 0.0005, 0.0), gap=-top)  # on the table, side by side
    _settle(env, 3)
    assert env.touches_table("green_block")
    assert _step(env) is False
    highest_centre_on_table = float(np.linalg.norm(half))
    assert highest_centre_on_table - half[2] < top - T.Z_SINK_TOLERANCE  # the band's bottom


def test_spoon_may_hang_over_the_towel_edge():
    """Not "completely on": the spoon's centre over the towel with its bowl end on the table counts."""
    env = _env(T.PutSpoonOnTowel)
    half = env.geometry["towel"].half_extents
    _put_source(env, (half[0] + T.XY_TOLERANCE - 0.004, 0.0), gap=0.002)
    _settle(env, 5)
    assert env.touches_table("spoon")
    assert _static(env)["is_success"] is True
    assert _step(env) is True


# --------------------------------------------------------------------------- eggplant in basket
def _put_eggplant(env, offset_xy=(0.0, 0.0), lift: float = -0.0005) -> None:
    """Eggplant centre at `offset_xy` in the basket's frame, bottom `lift` metres above its floor."""
    centre, axes = _target_frame(env)
    half = env.geometry["eggplant"].half_extents
    xy = centre + offset_xy[0] * axes[0] + offset_xy[1] * axes[1]
    _, tquat = env.body_pose("basket")
    env.set_free_body_pose("eggplant", np.array([xy[0], xy[1], env.target_top() + half[2] + lift]),
                           quat_to_yaw(tquat))


def test_eggplant_in_basket_boundaries():
    cls = T.PutEggplantInBasket
    env = _env(cls)
    env.set_mocap_pose("basket", env.body_pose("basket")[0], 0.3)  # a turned basket
    _put_eggplant(env)
    assert _static(env)["is_success"] is True
    for axis in (0, 1):
        for sign in (1.0, -1.0):
            for margin, expected in ((-EPS, True), (EPS, False)):
                offset = np.zeros(2)
                offset[axis] = sign * (cls.inner_half_extents[axis] + margin)
                _put_eggplant(env, offset)
                assert _static(env)["is_success"] is expected, (axis, sign, margin)
    half_z = env.geometry["eggplant"].half_extents[2]
    for height, expected in ((cls.in_height - EPS, True), (cls.in_height + EPS, False)):
        _put_eggplant(env, lift=height - half_z)  # centre `height` above the floor
        assert _static(env)["is_success"] is expected, height


def test_eggplant_in_basket_through_step():
    """Resting on the floor, or against a wall ("in" allows touching it): success. Lying on the
    rim: failure. Held in the basket: failure."""
    cls = T.PutEggplantInBasket
    env = _env(cls)
    _put_eggplant(env)
    _settle(env, 2)
    assert _step(env) is True

    env = _env(cls)
    half = env.geometry["eggplant"].half_extents
    _put_eggplant(env, (0.0, cls.inner_half_extents[1] - half[1] - 0.001))
    _settle(env, 3)
    assert env.touching(env.object_tag("eggplant"), env.object_tag("basket"))
    assert _step(env) is True

    env = _env(cls)  # across the +y wall's top, centre just inside the inner footprint
    wall = env.data.geom("basket_wall_py")
    _put_eggplant(env, (0.0, cls.inner_half_extents[1] - EPS),
                  lift=wall.xpos[2] + env.model.geom("basket_wall_py").size[2] - env.target_top())
    assert _static(env)["is_success"] is False

    env = _env(cls)
    _put_eggplant(env)
    _settle(env, 2)
    _grip(env, "eggplant")
    metrics = _static(env)
    assert metrics["is_grasped"] and metrics["src_on_target"] and metrics["is_success"] is False
    assert _step(env, CLOSED_STILL) is False


# --------------------------------------------------------------------------- lift cube
def _lift_cube(env, bottom: float, grasp: bool = True) -> None:
    """Red cube with its bottom `bottom` metres above the table, squeezed by both pads or not."""
    pos, quat = env.body_pose("red_cube")
    half = env.geometry["red_cube"].half_extents[2]
    env.set_free_body_pose("red_cube", np.array([pos[0], pos[1], bottom + half]), quat_to_yaw(quat))
    if grasp:
        _grip(env, "red_cube")


def test_lift_cube_boundary():
    """Grasped with the bottom lift_height above the table: just above succeeds, just below fails;
    not grasped fails at any height."""
    lift = T.LiftCube.lift_height
    for bottom, grasp, expected in ((lift + EPS, True, True), (lift - EPS, True, False),
                                    (lift + 0.03, False, False), (0.0, True, False)):
        env = _env(T.LiftCube)
        _lift_cube(env, bottom, grasp)
        metrics = _static(env)
        assert metrics["is_grasped"] is grasp, (bottom, grasp)
        assert metrics["is_success"] is expected, (bottom, grasp)


@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
def test_lift_cube_through_step(reward_type):
    lift = T.LiftCube.lift_height
    for bottom, expected in ((lift + 0.01, True), (lift - 0.01, False)):
        env = _env(T.LiftCube, reward_type=reward_type)
        _lift_cube(env, bottom)
        assert _step(env, CLOSED_STILL) is expected, bottom
        assert env.is_grasped("red_cube")
    env = _env(T.LiftCube, reward_type=reward_type)  # high but let go: falls, and is no success
    _lift_cube(env, lift + 0.01, grasp=False)
    assert _step(env) is False


# --------------------------------------------------------------------------- push cube
def _push_cube(env, distance: float, angle: float) -> None:
    """Blue cube resting on the table, its centre `distance` metres from the mark's centre."""
    goal = env.goal_position()
    half = env.geometry["blue_cube"].half_extents[2]
    xy = goal[:2] + distance * np.array([np.cos(angle), np.sin(angle)])
    env.set_free_body_pose("blue_cube", np.array([xy[0], xy[1], half - 0.0005]))


@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
def test_push_cube_radius(reward_type):
    """Inside goal_radius succeeds, 1 mm outside fails, in several directions; static and through
    a step (the cube rests on the table, the arm is away)."""
    radius = T.PushCube.goal_radius
    for angle in (0.0, 2.0, -2.5):
        for distance, expected in ((radius - EPS, True), (radius + EPS, False), (0.0, True)):
            env = _env(T.PushCube, reward_type=reward_type)
            _push_cube(env, distance, angle)
            metrics = _static(env)
            assert metrics["is_success"] is expected, (angle, distance)
            assert metrics["goal_distance"] == pytest.approx(distance, abs=1e-9)
            assert _step(env) is expected, (angle, distance)


def test_push_cube_lifted_over_the_mark_fails():
    """"Push the cube onto the mark on the table": a cube held in the air over the mark, or
    dropped toward it and still falling, has not been pushed onto it."""
    env = _env(T.PushCube)
    goal = env.goal_position()
    half = env.geometry["blue_cube"].half_extents[2]
    env.set_free_body_pose("blue_cube", np.array([goal[0], goal[1], half + 0.04]))
    _grip(env, "blue_cube")
    metrics = _static(env)
    assert metrics["goal_distance"] < T.PushCube.goal_radius and env.is_grasped("blue_cube")
    assert metrics["is_success"] is False
    assert _step(env, CLOSED_STILL) is False
    env = _env(T.PushCube)  # let go 4 cm above the mark: still in the air after the step
    goal = env.goal_position()
    env.set_free_body_pose("blue_cube", np.array([goal[0], goal[1], half + 0.04]))
    assert _static(env)["is_success"] is False


# --------------------------------------------------------------------------- robosuite
# The adapter reports robosuite's own `_check_success` (docs/suites.md: "sparse reward 1.0 when the task
# succeeds"), whose thresholds are literals in robosuite 1.5's code, restated here:
RS_LIFT_MARGIN = 0.04  # Lift: cube body above the table top by more than this (no grasp needed)
RS_BIN_HEIGHT = 0.1  # PickPlaceCan: can body within (bin z, bin z + this), inside its bin quarter
RS_PEG_HALF = 0.03  # NutAssemblySquare: nut body within this of the peg in x and y ...
RS_PEG_HEIGHT = 0.05  # ... and below the table top + this
RS_LET_GO = np.arctanh(0.4) / 10.0  # both: eef farther than this from the object (1 - tanh(10 d) < 0.6)


@pytest.fixture(scope="module")
def rs_envs():
    pytest.importorskip("robosuite")
    from steergym.envs.robosuite_tasks import RobosuiteEnv

    envs: dict = {}

    def get(task: str):
        if task not in envs:
            envs[task] = RobosuiteEnv(task)
        envs[task].reset(seed=0)
        return envs[task]

    yield get
    for env in envs.values():
        env.close()


def _rs_place(env, joint: str, pos) -> None:
    """Put a robosuite object's free joint at `pos` (keeping its orientation), at rest."""
    sim = env.robosuite_env.sim
    qpos = np.array(sim.data.get_joint_qpos(joint), dtype=float)
    qpos[:3] = pos
    sim.data.set_joint_qpos(joint, qpos)
    sim.data.set_joint_qvel(joint, np.zeros(6))
    sim.forward()


def _rs_step(env) -> bool:
    """One step with a zero action: reward, termination and robosuite's rule must agree."""
    _, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    success = info["is_success"]
    assert isinstance(success, bool) and success is bool(env.robosuite_env._check_success())
    assert reward == float(success) and terminated is success and not truncated
    return success


def _rs_eef(env) -> np.ndarray:
    rs = env.robosuite_env
    return np.array(rs.sim.data.site_xpos[rs.robots[0].eef_site_id["right"]])


def _rs_move_eef(env, target, steps: int) -> None:
    """Drive the end effector toward `target` with OSC position deltas (gripper action 0)."""
    for _ in range(steps):
        action = np.zeros(7, np.float32)
        action[:3] = np.clip(10.0 * (np.asarray(target) - _rs_eef(env)), -1.0, 1.0)
        env.step(action)


def test_robosuite_lift_height(rs_envs):
    env = rs_envs("Lift")
    rs = env.robosuite_env
    table = rs.model.mujoco_arena.table_offset[2]
    xy = np.array(rs.sim.data.body_xpos[rs.cube_body_id][:2])
    for height, expected in ((RS_LIFT_MARGIN + EPS, True), (RS_LIFT_MARGIN - EPS, False)):
        _rs_place(env, "cube_joint0", [*xy, table + height])
        assert rs.sim.data.body_xpos[rs.cube_body_id][2] == pytest.approx(table + height)
        assert bool(rs._check_success()) is expected, height
    _rs_place(env, "cube_joint0", [*xy, table + RS_LIFT_MARGIN + 0.03])  # falls ~1 cm in one step
    assert _rs_step(env) is True
    env = rs_envs("Lift")  # resting on the table
    assert _rs_step(env) is False


def test_robosuite_can_in_bin(rs_envs):
    env = rs_envs("PickPlaceCan")
    rs = env.robosuite_env
    can = rs.obj_body_id["Can"]
    # the can's bin (id 3) is the +x +y quarter of the bins' area
    low = np.array(rs.bin2_pos[:2], dtype=float)
    high = low + np.array(rs.bin_size[:2]) / 2.0
    bin_z = rs.bin2_pos[2]
    centre = (low + high) / 2.0
    for axis in (0, 1):
        for edge, inward in ((low, 1.0), (high, -1.0)):
            for margin, expected in ((EPS, True), (-EPS, False)):
                xy = centre.copy()
                xy[axis] = edge[axis] + inward * margin
                _rs_place(env, "Can_joint0", [*xy, bin_z + 0.05])
                assert bool(rs._check_success()) is expected, (axis, edge[axis], margin)
    for z, expected in ((bin_z + RS_BIN_HEIGHT - EPS, True), (bin_z + RS_BIN_HEIGHT + EPS, False),
                        (bin_z + EPS, True), (bin_z - EPS, False)):
        _rs_place(env, "Can_joint0", [*centre, z])
        assert bool(rs._check_success()) is expected, z
    assert np.allclose(rs.sim.data.body_xpos[can][:2], centre)

    # resting in its bin with the arm away: success through a step; on the table: failure
    _rs_place(env, "Can_joint0", [*centre, bin_z + 0.06])
    for _ in range(10):
        env.step(np.zeros(7, np.float32))
    assert _rs_step(env) is True
    assert _rs_step(rs_envs("PickPlaceCan")) is False

    # still at the gripper (within RS_LET_GO of the eef) in the bin: failure
    env = rs_envs("PickPlaceCan")
    _rs_move_eef(env, [*centre, bin_z + 0.2], 30)  # over the bin, then down into it
    _rs_move_eef(env, [*centre, bin_z + 0.09], 30)
    eef = _rs_eef(env)
    assert np.all(eef[:2] > low) and np.all(eef[:2] < high)
    assert bin_z + RS_LET_GO < eef[2] < bin_z + RS_BIN_HEIGHT
    for distance, expected in ((RS_LET_GO + EPS, True), (RS_LET_GO - EPS, False)):
        _rs_place(env, "Can_joint0", eef - [0.0, 0.0, distance])
        assert bool(rs._check_success()) is expected, distance


def test_robosuite_nut_on_peg(rs_envs):
    env = rs_envs("NutAssemblySquare")
    rs = env.robosuite_env
    peg = np.array(rs.sim.data.body_xpos[rs.peg1_body_id])  # the square nut's peg
    table = rs.table_offset[2]
    low_z = table + RS_PEG_HEIGHT - 0.02
    for axis in (0, 1):
        for sign in (1.0, -1.0):
            for margin, expected in ((-EPS, True), (EPS, False)):
                pos = np.array([peg[0], peg[1], low_z])
                pos[axis] += sign * (RS_PEG_HALF + margin)
                _rs_place(env, "SquareNut_joint0", pos)
                assert bool(rs._check_success()) is expected, (axis, sign, margin)
    for z, expected in ((table + RS_PEG_HEIGHT - EPS, True), (table + RS_PEG_HEIGHT + EPS, False)):
        _rs_place(env, "SquareNut_joint0", [peg[0], peg[1], z])
        assert bool(rs._check_success()) is expected, z
    # the other (round) peg does not count for the square nut
    other = np.array(rs.sim.data.body_xpos[rs.peg2_body_id])
    _rs_place(env, "SquareNut_joint0", [other[0], other[1], low_z])
    assert bool(rs._check_success()) is False
    # dropped around its peg and resting at the bottom: success through steps
    _rs_place(env, "SquareNut_joint0", [peg[0], peg[1], table + 0.03])
    for _ in range(10):
        env.step(np.zeros(7, np.float32))
    assert _rs_step(env) is True
