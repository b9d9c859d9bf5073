//! End-to-end: real `ilp-connector` processes on real PostgreSQL databases, over HTTP on
//! 127.0.0.1.

mod packet_path;
