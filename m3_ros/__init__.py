# m3_ros: ROS 2 nodes around m3_core. The generated interfaces (m3_ros.msg/.srv/.action) are
# installed by CMake into site-packages; this namespace-style __init__ (identical in the repo
# and in the install) lets them and the repo's node modules form one package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
