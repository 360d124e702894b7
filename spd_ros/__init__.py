"""spd_ros: the ROS 2 layer of spd_ros — node, message conversion, frame cache, bag replay."""
