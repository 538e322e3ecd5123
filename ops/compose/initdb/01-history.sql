-- The fleet's operation history lives in its own database next to the sample one.
CREATE DATABASE dbfleet_history OWNER dbfleet;
