"""The built-in demo: a simulated quadruped walks a room of photo-textured objects; the real
m3_ros nodes collect, train, serve and ground them; a report folder shows the result.

    python -m demo.run [--out demo_output] [--frames N] [--iterations N] [--quick]

Modules: :mod:`demo.scene` (the room, objects and walk), :mod:`demo.sim_robot` (the robot's
topics, live or as a rosbag2 file), :mod:`demo.bag` (rosbag2 read/write with ``rosbags``),
:mod:`demo.client` (the scripted ROS client), :mod:`demo.report` (figures and summary),
:mod:`demo.run` (the orchestration).
"""
